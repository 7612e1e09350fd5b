"""GitLab (gitlab.com or self-managed) through python-gitlab, API v4."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gitlab
import requests
from gitlab.exceptions import GitlabError

from adapters.git_providers.base import (
    AuthError,
    Branch,
    Comment,
    Commit,
    CommitState,
    Conflict,
    GitProviderClient,
    Issue,
    ListState,
    NotFound,
    ProviderDown,
    ProviderError,
    ProviderUser,
    PullRequest,
    RateLimited,
    Repository,
    Webhook,
    has_marker,
    parse_retry_after,
    parse_time,
    with_marker,
)

DEFAULT_URL = "https://gitlab.com"

# Neutral event → GitLab project hook flag.
_EVENT_FLAGS = {
    "push": "push_events",
    "tag_push": "tag_push_events",
    "pull_request": "merge_requests_events",
    "issues": "issues_events",
    "issue_comment": "note_events",
    "release": "releases_events",
}
_STATUS = {"pending": "pending", "success": "success", "failure": "failed", "error": "failed"}
_LIST_STATE = {"open": "opened", "closed": "closed", "all": None}


class _RateLimitSession(requests.Session):
    """Raise RateLimited on 429 before python-gitlab sees it.

    python-gitlab would otherwise sleep and retry up to 10 times per call, and its exceptions do
    not carry response headers, so Retry-After would be lost. Temporal owns retries."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().request(method, url, *args, **kwargs)
        if response.status_code == 429:
            raise RateLimited(
                "GitLab answered 429 Too Many Requests",
                provider="gitlab",
                status=429,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response


def map_gitlab_error(exc: Exception) -> ProviderError:
    """python-gitlab / requests exception → our hierarchy, by ``response_code``."""
    if isinstance(exc, GitlabError):
        status = exc.response_code
        message = f"GitLab answered {status}: {exc.error_message}"
        if status is None:
            return ProviderDown(f"GitLab unreachable: {exc.error_message}", provider="gitlab")
        if status in (401, 403):
            return AuthError(message, provider="gitlab", status=status)
        if status == 404:
            return NotFound(message, provider="gitlab", status=status)
        if status == 409:
            return Conflict(message, provider="gitlab", status=status)
        if status == 429:
            return RateLimited(message, provider="gitlab", status=status)
        if status >= 500:
            return ProviderDown(message, provider="gitlab", status=status)
        return ProviderError(message, provider="gitlab", status=status)
    if isinstance(exc, requests.RequestException):
        return ProviderDown(f"GitLab unreachable: {type(exc).__name__}", provider="gitlab")
    raise exc


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (GitlabError, requests.RequestException) as exc:
        raise map_gitlab_error(exc) from exc


def _mr_state(state: str) -> str:
    return {"opened": "open", "locked": "open"}.get(state, state)


class GitLabClient(GitProviderClient):
    """GitLab API v4 at ``base_url`` (the server, with or without ``/api/v4``).

    ``repo`` is the project's full path (``group/sub/project``)."""

    provider = "gitlab"

    def __init__(self, token: str, base_url: str = DEFAULT_URL, *, timeout: float = 30.0) -> None:
        # python-gitlab appends /api/v4 itself; accept the API URL too, like the Gitea client.
        server = base_url.rstrip("/").removesuffix("/api/v4")
        # As a Bearer token: GitLab accepts personal access tokens that way too, while an OAuth
        # token in PRIVATE-TOKEN would be looked up among personal access tokens only.
        self._gl = gitlab.Gitlab(
            server, oauth_token=token, timeout=timeout, session=_RateLimitSession()
        )

    def _project(self, repo: str) -> Any:
        # lazy: the path is URL-encoded into the request, no GET /projects/:id first.
        return self._gl.projects.get(repo, lazy=True)

    def current_user(self) -> ProviderUser:
        with _errors():
            self._gl.auth()
            user = self._gl.user
            assert user is not None
            scopes: tuple[str, ...] = ()
            try:
                # Personal, project and group access tokens describe themselves; OAuth tokens do not.
                scopes = tuple(self._gl.personal_access_tokens.get("self").scopes)
            except GitlabError as exc:
                if exc.response_code not in (401, 403, 404):
                    raise
            return ProviderUser(login=user.username, name=user.name or user.username, scopes=scopes)

    def list_repositories(self) -> list[Repository]:
        with _errors():
            repos = []
            for p in self._gl.projects.list(membership=True, iterator=True):
                # The project list has no language; /languages gives percentages per language.
                languages = p.languages() or {}
                language = max(languages, key=languages.get) if languages else None
                repos.append(
                    Repository(
                        full_name=p.path_with_namespace,
                        default_branch=p.default_branch or "",
                        language=language,
                        topics=tuple(p.attributes.get("topics") or p.attributes.get("tag_list") or ()),
                        private=p.attributes.get("visibility") != "public",
                        fork="forked_from_project" in p.attributes,
                        archived=bool(p.attributes.get("archived")),
                        clone_url=p.http_url_to_repo,
                        html_url=p.web_url,
                    )
                )
            return repos

    def list_branches(self, repo: str) -> list[Branch]:
        with _errors():
            return [
                Branch(name=b.name, sha=b.commit["id"])
                for b in self._project(repo).branches.list(iterator=True)
            ]

    def list_commits(self, repo: str, branch: str, limit: int = 30) -> list[Commit]:
        with _errors():
            commits = self._project(repo).commits.list(ref_name=branch, per_page=limit, get_all=False)
            return [
                Commit(
                    sha=c.id,
                    message=c.message,
                    author_name=c.author_name,
                    authored_at=parse_time(c.attributes.get("authored_date")),
                    url=c.attributes.get("web_url", ""),
                )
                for c in commits[:limit]
            ]

    def get_commit(self, repo: str, sha: str) -> Commit:
        # GET /projects/:id/repository/commits/:sha takes a full or short SHA (or a ref).
        with _errors():
            c = self._project(repo).commits.get(sha)
            return Commit(sha=c.id, message=c.message, author_name=c.author_name,
                          authored_at=parse_time(c.attributes.get("authored_date")),
                          url=c.attributes.get("web_url", ""))

    def list_pull_requests(self, repo: str, state: ListState = "open") -> list[PullRequest]:
        filters = {"state": _LIST_STATE[state]} if _LIST_STATE[state] else {}
        with _errors():
            return [
                PullRequest(number=m.iid, url=m.web_url, state=_mr_state(m.state), title=m.title,
                            head=m.source_branch, base=m.target_branch)
                for m in self._project(repo).mergerequests.list(iterator=True, **filters)
            ]

    def list_issues(self, repo: str, state: ListState = "open") -> list[Issue]:
        filters = {"state": _LIST_STATE[state]} if _LIST_STATE[state] else {}
        with _errors():
            return [
                Issue(number=i.iid, title=i.title, state=_mr_state(i.state), url=i.web_url)
                for i in self._project(repo).issues.list(iterator=True, **filters)
            ]

    def create_branch(self, repo: str, name: str, from_sha: str) -> Branch:
        with _errors():
            project = self._project(repo)
            try:
                b = project.branches.create({"branch": name, "ref": from_sha})
            except GitlabError as exc:
                # GitLab answers a plain 400 for an existing branch; confirm by looking it up.
                if exc.response_code == 400 and self._branch_exists(project, name):
                    raise Conflict(f"branch {name!r} already exists in {repo}", provider="gitlab",
                                   status=400) from exc
                raise
            return Branch(name=b.name, sha=b.commit["id"])

    @staticmethod
    def _branch_exists(project: Any, name: str) -> bool:
        try:
            project.branches.get(name)
        except GitlabError as exc:
            if exc.response_code == 404:
                return False
            raise
        return True

    def create_pull_request(self, repo: str, title: str, head: str, base: str, body: str = "") -> PullRequest:
        with _errors():
            m = self._project(repo).mergerequests.create(
                {"source_branch": head, "target_branch": base, "title": title, "description": body}
            )
            return PullRequest(number=m.iid, url=m.web_url, state=_mr_state(m.state), title=m.title,
                               head=m.source_branch, base=m.target_branch)

    def post_or_update_comment(self, repo: str, number: int, body: str, marker: str) -> Comment:
        """Comments are merge request notes (``number`` is the MR iid)."""
        text = with_marker(body, marker)
        with _errors():
            mr = self._project(repo).mergerequests.get(number)
            for note in mr.notes.list(iterator=True):
                if has_marker(note.body, marker):
                    mr.notes.update(note.id, {"body": text})
                    return Comment(id=str(note.id), url=f"{mr.web_url}#note_{note.id}", created=False)
            note = mr.notes.create({"body": text})
            return Comment(id=str(note.id), url=f"{mr.web_url}#note_{note.id}", created=True)

    def set_commit_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        context: str,
        description: str = "",
        target_url: str | None = None,
    ) -> None:
        data = {"state": _STATUS[state], "name": context, "description": description}
        if target_url:
            data["target_url"] = target_url
        with _errors():
            self._project(repo).commits.get(sha, lazy=True).statuses.create(data)

    def _hook_data(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        self._check_events(events)
        data: dict[str, Any] = {"url": url, "token": secret, "enable_ssl_verification": True}
        data.update({flag: e in events for e, flag in _EVENT_FLAGS.items()})
        return data

    def create_webhook(self, repo: str, url: str, secret: str, events: list[str]) -> Webhook:
        data = self._hook_data(url, secret, events)
        with _errors():
            h = self._project(repo).hooks.create(data)
            return Webhook(id=str(h.id), url=url, events=tuple(sorted(events)))

    def update_webhook(self, repo: str, hook_id: str, url: str, secret: str, events: list[str]) -> Webhook:
        data = self._hook_data(url, secret, events)
        with _errors():
            self._project(repo).hooks.update(int(hook_id), data)
            return Webhook(id=str(hook_id), url=url, events=tuple(sorted(events)))

    def delete_webhook(self, repo: str, hook_id: str) -> None:
        with _errors():
            self._project(repo).hooks.delete(int(hook_id))

    def close(self) -> None:
        self._gl.session.close()
