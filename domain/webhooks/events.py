"""One trigger event from four providers' webhook payloads.

``normalize`` turns a verified payload into a ``TriggerEvent`` (or None for deliveries we
do not act on, such as GitHub's ``ping``), so matching and ``${{ trigger.* }}`` never see a
provider's own shape. A payload that lacks a field we need raises ``PayloadError`` naming it.

Provider notes, where their payloads differ from GitHub's:

- GitLab sends ``update`` for any merge request edit; only an update carrying ``oldrev``
  (new commits) becomes ``synchronize``, other updates become ``edited``.
- Bitbucket Cloud push payloads list no files, so ``changed_paths`` is empty for them and
  path filters are not applied (see ``matching``); one push may change several refs, so
  ``normalize_all`` returns one event per ref and ``normalize`` the first.
- Bitbucket has no release events; ``pullrequest:updated`` becomes ``synchronize``. Its pull
  request payloads carry 12-character hashes; the dispatch expands them to full SHAs through the
  provider API before any run starts (``activities.webhooks``).

Pull requests: ``head_sha`` is the source branch's head; ``after`` is that head too and ``before``
the previous head when the provider says (GitHub/Gitea ``synchronize`` ``before``, GitLab
``oldrev``). A merged pull request has ``merge_commit_sha`` when the provider reports one, and
then ``sha`` is the merge commit — what landed on the target branch, so ``checkout`` builds and the
commit status lands on what a deploy ships; otherwise ``sha`` is the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from domain.webhooks.signatures import PROVIDERS, UnknownProviderError, WebhookError

EventKind = Literal["push", "pull_request", "issue", "issue_comment", "release"]
ZERO_SHA = "0" * 40


class PayloadError(WebhookError):
    """A verified delivery whose body is not the documented shape; the message names the field."""


@dataclass(frozen=True)
class TriggerEvent:
    """A provider-neutral webhook event; ``as_context()`` is what ``${{ trigger.* }}`` reads."""

    provider: str
    kind: EventKind
    repository: str
    action: str | None = None
    ref: str | None = None
    branch: str | None = None
    tag: str | None = None
    before: str | None = None
    after: str | None = None
    sha: str | None = None
    head_sha: str | None = None
    merge_commit_sha: str | None = None
    deleted: bool = False
    commits: list[dict[str, str]] = field(default_factory=list)
    changed_paths: list[str] = field(default_factory=list)
    source_branch: str | None = None
    target_branch: str | None = None
    from_fork: bool = False
    number: int | None = None
    title: str | None = None
    author: str | None = None
    comment_body: str | None = None
    release_tag: str | None = None
    release_action: str | None = None
    url: str | None = None

    def as_context(self) -> dict[str, Any]:
        """A JSON-ready copy of every field, for ``${{ trigger.* }}`` and run records."""
        return asdict(self)


# --- payload access -----------------------------------------------------------------------

def _path(payload: Any, dotted: str) -> tuple[bool, Any]:
    value = payload
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _req(payload: Any, dotted: str, provider: str, kind: str) -> Any:
    found, value = _path(payload, dotted)
    if not found or value is None:
        raise PayloadError(f"{provider} {kind} payload is missing '{dotted}'")
    return value


def _opt(payload: Any, *dotted: str) -> Any:
    """The first present, non-null value among ``dotted`` paths."""
    for candidate in dotted:
        found, value = _path(payload, candidate)
        if found and value is not None:
            return value
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pull_request_shas(head: Any, merge: Any, before: Any, after: Any = None) -> dict[str, Any]:
    """The commit fields of a pull request event (see the module notes); strings or None."""
    head, merge, before, after = (v if isinstance(v, str) and v else None for v in (head, merge, before, after))
    return {"sha": merge or head, "head_sha": head, "merge_commit_sha": merge, "before": before,
            "after": after or head}


def _split_ref(ref: str) -> tuple[str | None, str | None]:
    """(branch, tag) of a full git ref; a bare name counts as a branch."""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), None
    if ref.startswith("refs/tags/"):
        return None, ref.removeprefix("refs/tags/")
    return ref, None


def _commits(raw: Any, provider: str) -> tuple[list[dict[str, str]], list[str]]:
    """Commits as {id, message, author} and the ordered union of their added/modified/removed."""
    if not isinstance(raw, list):
        raise PayloadError(f"{provider} push payload 'commits' is not a list")
    commits: list[dict[str, str]] = []
    paths: dict[str, None] = {}  # a dict keeps first-seen order, unlike a set
    for commit in raw:
        if not isinstance(commit, dict):
            raise PayloadError(f"{provider} push payload has a commit that is not an object")
        author = _opt(commit, "author.username", "author.name", "author.user.display_name", "author.raw")
        commits.append({
            "id": str(_opt(commit, "id", "hash") or ""),
            "message": str(commit.get("message") or ""),
            "author": str(author or ""),
        })
        for key in ("added", "modified", "removed"):
            for path in commit.get(key) or []:
                paths[str(path)] = None
    return commits, list(paths)


def _push(provider: str, payload: dict[str, Any], repository: str, author: Any, url: Any,
          sha: Any = None) -> TriggerEvent:
    ref = _req(payload, "ref", provider, "push")
    after = _req(payload, "after", provider, "push")
    branch, tag = _split_ref(ref)
    commits, paths = _commits(payload.get("commits") or [], provider)
    return TriggerEvent(
        provider=provider, kind="push", repository=repository, ref=ref, branch=branch, tag=tag,
        before=payload.get("before"), after=after, sha=sha or after,
        deleted=bool(payload.get("deleted")) or after == ZERO_SHA, commits=commits, changed_paths=paths,
        author=author, url=url,
    )


# --- GitHub and Gitea (Gitea's payloads follow GitHub's shape) -----------------------------

_GITEA_PR_ACTIONS = {"synchronized": "synchronize"}


def _github_like(provider: str, event: str, payload: dict[str, Any]) -> TriggerEvent | None:
    if provider == "gitea" and event == "pull_request_sync":
        event, payload = "pull_request", {**payload, "action": "synchronized"}
    if event not in ("push", "pull_request", "issues", "issue_comment", "release"):
        return None
    kind = {"issues": "issue"}.get(event, event)
    repository = _req(payload, "repository.full_name", provider, kind)
    if event == "push":
        return _push(provider, payload, repository, _opt(payload, "pusher.name", "pusher.login", "sender.login"),
                     _opt(payload, "compare", "compare_url"))
    action = _req(payload, "action", provider, kind)
    if event == "pull_request":
        pr = _req(payload, "pull_request", provider, kind)
        action = _GITEA_PR_ACTIONS.get(action, action)
        if action == "closed" and pr.get("merged"):
            action = "merged"
        # A deleted fork leaves head.repo null: it still came from outside, so treat it as a fork.
        head_repo = _opt(pr, "head.repo.full_name")
        # An open pull request's merge_commit_sha is GitHub's test merge, not a landed commit.
        shas = _pull_request_shas(_opt(pr, "head.sha"), pr.get("merge_commit_sha") if action == "merged" else None,
                                  payload.get("before"), payload.get("after"))
        return TriggerEvent(
            provider=provider, kind="pull_request", repository=repository, action=action,
            **shas, source_branch=_req(pr, "head.ref", provider, "pull_request.head"),
            target_branch=_req(pr, "base.ref", provider, "pull_request.base"),
            from_fork=head_repo != _opt(pr, "base.repo.full_name") or head_repo is None,
            number=_int(_opt(pr, "number") or payload.get("number")), title=pr.get("title"),
            author=_opt(pr, "user.login", "user.username"), url=pr.get("html_url"),
        )
    if event == "issues":
        issue = _req(payload, "issue", provider, kind)
        return TriggerEvent(
            provider=provider, kind="issue", repository=repository, action=action,
            number=_int(issue.get("number")), title=issue.get("title"),
            author=_opt(issue, "user.login", "user.username"), url=issue.get("html_url"),
        )
    if event == "issue_comment":
        issue = _req(payload, "issue", provider, kind)
        return TriggerEvent(
            provider=provider, kind="issue_comment", repository=repository, action=action,
            number=_int(issue.get("number")), title=issue.get("title"),
            author=_opt(payload, "comment.user.login", "comment.user.username"),
            comment_body=_req(payload, "comment.body", provider, kind), url=_opt(payload, "comment.html_url"),
        )
    release = _req(payload, "release", provider, kind)
    return TriggerEvent(
        provider=provider, kind="release", repository=repository, action=action,
        release_tag=_req(release, "tag_name", provider, "release.release"), release_action=action,
        title=release.get("name"), author=_opt(release, "author.login", "author.username"),
        url=release.get("html_url"),
    )


# --- GitLab ---------------------------------------------------------------------------------

_GITLAB_ACTIONS = {"open": "opened", "close": "closed", "merge": "merged", "reopen": "reopened",
                   "update": "edited"}
_GITLAB_RELEASE_ACTIONS = {"create": "published", "update": "edited", "delete": "deleted"}


def _gitlab(event: str, payload: dict[str, Any]) -> TriggerEvent | None:
    p = "gitlab"
    if event in ("Push Hook", "Tag Push Hook"):
        repository = _req(payload, "project.path_with_namespace", p, "push")
        return _push(p, payload, repository, _opt(payload, "user_username", "user_name"),
                     _opt(payload, "project.web_url"), sha=payload.get("checkout_sha"))
    kinds = {"Merge Request Hook": "pull_request", "Issue Hook": "issue", "Note Hook": "issue_comment",
             "Release Hook": "release"}
    kind = kinds.get(event)
    if kind is None:
        return None
    repository = _req(payload, "project.path_with_namespace", p, kind)
    author = _opt(payload, "user.username", "user.name")
    if kind == "release":
        action = _GITLAB_RELEASE_ACTIONS.get(_req(payload, "action", p, kind), payload["action"])
        return TriggerEvent(provider=p, kind="release", repository=repository, action=action,
                            release_tag=_req(payload, "tag", p, kind), release_action=action,
                            title=payload.get("name"), sha=_opt(payload, "commit.id"), url=payload.get("url"))
    attrs = _req(payload, "object_attributes", p, kind)
    if kind == "pull_request":
        action = _GITLAB_ACTIONS.get(attrs.get("action"), attrs.get("action"))
        if attrs.get("action") == "update" and attrs.get("oldrev"):
            action = "synchronize"
        shas = _pull_request_shas(_opt(attrs, "last_commit.id"),
                                  attrs.get("merge_commit_sha") if action == "merged" else None, attrs.get("oldrev"))
        return TriggerEvent(
            provider=p, kind="pull_request", repository=repository, action=action, **shas,
            source_branch=_req(attrs, "source_branch", p, "merge request object_attributes"),
            target_branch=_req(attrs, "target_branch", p, "merge request object_attributes"),
            from_fork=attrs.get("source_project_id") != attrs.get("target_project_id"),
            number=_int(attrs.get("iid")), title=attrs.get("title"), author=author, url=attrs.get("url"),
        )
    if kind == "issue":
        action = _GITLAB_ACTIONS.get(attrs.get("action"), attrs.get("action"))
        return TriggerEvent(provider=p, kind="issue", repository=repository, action=action,
                            number=_int(attrs.get("iid")), title=attrs.get("title"), author=author,
                            url=attrs.get("url"))
    # Note Hook: comments on issues and merge requests; commit and snippet notes have no number.
    target = _opt(payload, "merge_request", "issue") or {}
    action = {"create": "created", "update": "edited"}.get(attrs.get("action"), "created")
    return TriggerEvent(provider=p, kind="issue_comment", repository=repository, action=action,
                        number=_int(target.get("iid")), title=target.get("title"), author=author,
                        comment_body=_req(attrs, "note", p, "note object_attributes"), url=attrs.get("url"))


# --- Bitbucket Cloud ------------------------------------------------------------------------

_BITBUCKET_PR_ACTIONS = {"pullrequest:created": "opened", "pullrequest:updated": "synchronize",
                         "pullrequest:fulfilled": "merged", "pullrequest:rejected": "closed"}


def _bitbucket_all(event: str, payload: dict[str, Any]) -> list[TriggerEvent]:
    p = "bitbucket"
    kind = ("push" if event == "repo:push" else "pull_request" if event in _BITBUCKET_PR_ACTIONS
            else "issue_comment" if event in ("pullrequest:comment_created", "issue:comment_created")
            else "issue" if event in ("issue:created", "issue:updated") else None)
    if kind is None:
        return []
    repository = _req(payload, "repository.full_name", p, kind)
    actor = _opt(payload, "actor.nickname", "actor.display_name")
    if kind == "push":
        changes = _req(payload, "push.changes", p, kind)
        return [_bitbucket_change(change, repository, actor) for change in changes]
    if kind == "issue":
        issue = _req(payload, "issue", p, kind)
        return [TriggerEvent(provider=p, kind="issue", repository=repository,
                             action="opened" if event == "issue:created" else "edited",
                             number=_int(issue.get("id")), title=issue.get("title"),
                             author=_opt(issue, "reporter.nickname", "reporter.display_name"),
                             url=_opt(issue, "links.html.href"))]
    if kind == "issue_comment":
        target = _opt(payload, "pullrequest", "issue") or {}
        return [TriggerEvent(provider=p, kind="issue_comment", repository=repository, action="created",
                             number=_int(target.get("id")), title=target.get("title"),
                             author=_opt(payload, "comment.user.nickname", "comment.user.display_name"),
                             comment_body=_req(payload, "comment.content.raw", p, kind),
                             url=_opt(payload, "comment.links.html.href"))]
    pr = _req(payload, "pullrequest", p, kind)
    source_repo = _opt(pr, "source.repository.full_name")
    action = _BITBUCKET_PR_ACTIONS[event]
    shas = _pull_request_shas(_opt(pr, "source.commit.hash"),
                              _opt(pr, "merge_commit.hash") if action == "merged" else None, None)
    return [TriggerEvent(
        provider=p, kind="pull_request", repository=repository, action=action, **shas,
        source_branch=_req(pr, "source.branch.name", p, "pullrequest"),
        target_branch=_req(pr, "destination.branch.name", p, "pullrequest"),
        from_fork=source_repo is None or source_repo != _opt(pr, "destination.repository.full_name"),
        number=_int(pr.get("id")), title=pr.get("title"),
        author=_opt(pr, "author.nickname", "author.display_name"), url=_opt(pr, "links.html.href"),
    )]


def _bitbucket_change(change: Any, repository: str, actor: Any) -> TriggerEvent:
    p = "bitbucket"
    if not isinstance(change, dict):
        raise PayloadError("bitbucket push payload has a change that is not an object")
    # A deleted ref has no "new"; its name and type live only in "old".
    ref_side = change.get("new") or change.get("old")
    if not isinstance(ref_side, dict):
        raise PayloadError("bitbucket push payload is missing 'push.changes[].new'")
    name = _req(ref_side, "name", p, "push change")
    is_tag = _req(ref_side, "type", p, "push change") == "tag"
    after = _opt(change, "new.target.hash")
    commits, _ = _commits(change.get("commits") or [], p)
    return TriggerEvent(
        provider=p, kind="push", repository=repository,
        ref=f"refs/tags/{name}" if is_tag else f"refs/heads/{name}",
        branch=None if is_tag else name, tag=name if is_tag else None,
        before=_opt(change, "old.target.hash"), after=after, sha=after, deleted=change.get("new") is None,
        commits=commits, author=actor, url=_opt(change, "links.html.href", "new.links.html.href"),
    )


# --- entry points ---------------------------------------------------------------------------

def normalize_all(provider: str, event_name: str | None, payload: Any) -> list[TriggerEvent]:
    """Every trigger event in one delivery: one per changed ref for Bitbucket pushes, else at most one."""
    if provider not in PROVIDERS:
        raise UnknownProviderError(f"unknown provider '{provider}'; expected one of: {', '.join(PROVIDERS)}")
    if not event_name:
        raise PayloadError(f"{provider} delivery has no event name header")
    if not isinstance(payload, dict):
        raise PayloadError(f"{provider} {event_name} payload is not a JSON object")
    handlers: dict[str, Callable[[], list[TriggerEvent]]] = {
        "github": lambda: _one(_github_like("github", event_name, payload)),
        "gitea": lambda: _one(_github_like("gitea", event_name, payload)),
        "gitlab": lambda: _one(_gitlab(event_name, payload)),
        "bitbucket": lambda: _bitbucket_all(event_name, payload),
    }
    try:
        return handlers[provider]()
    except (AttributeError, TypeError) as exc:
        # A field of the wrong JSON type (a string where an object belongs) is a bad payload too.
        raise PayloadError(f"{provider} {event_name} payload has a field of the wrong type: {exc}") from None


def normalize(provider: str, event_name: str | None, payload: Any) -> TriggerEvent | None:
    """The trigger event of one delivery, or None for events we ignore (ping, wiki, ...)."""
    events = normalize_all(provider, event_name, payload)
    return events[0] if events else None


def _one(event: TriggerEvent | None) -> list[TriggerEvent]:
    return [event] if event is not None else []
