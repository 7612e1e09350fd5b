"""GitHub (and GitHub Enterprise) through PyGithub."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import github
import requests
from github.GithubException import GithubException

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

DEFAULT_BASE_URL = "https://api.github.com"

# GitHub's own names already match the neutral vocabulary except tag pushes, which arrive as `push`
# (and `create`) events.
_EVENTS = {
    "push": "push",
    "tag_push": "push",
    "pull_request": "pull_request",
    "issues": "issues",
    "issue_comment": "issue_comment",
    "release": "release",
}


def map_github_error(exc: Exception) -> ProviderError:
    """PyGithub / requests exception → our hierarchy, by status and headers only.

    PyGithub itself picks its exception subclasses by message text, so we ignore them."""
    if isinstance(exc, GithubException):
        status = exc.status
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        data = exc.data if isinstance(exc.data, dict) else {}
        message = f"GitHub answered {status}: {data.get('message') or exc.message or ''}".rstrip(": ")
        if status in (403, 429) and (headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers):
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is None and "x-ratelimit-reset" in headers:
                retry_after = max(0.0, float(headers["x-ratelimit-reset"]) - time.time())
            return RateLimited(message, provider="github", status=status, retry_after=retry_after)
        if status == 429:
            return RateLimited(message, provider="github", status=status)
        if status in (401, 403):
            return AuthError(message, provider="github", status=status)
        if status == 404:
            return NotFound(message, provider="github", status=status)
        # GitHub documents structured validation codes; `already_exists` is the conflict one.
        codes = {e.get("code") for e in data.get("errors", []) if isinstance(e, dict)}
        if status == 409 or (status == 422 and "already_exists" in codes):
            return Conflict(message, provider="github", status=status)
        if status >= 500:
            return ProviderDown(message, provider="github", status=status)
        return ProviderError(message, provider="github", status=status)
    if isinstance(exc, requests.RequestException):
        return ProviderDown(f"GitHub unreachable: {type(exc).__name__}", provider="github")
    raise exc


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (GithubException, requests.RequestException) as exc:
        raise map_github_error(exc) from exc


def _state(pr: Any) -> str:
    if pr.state == "closed" and pr.merged_at is not None:
        return "merged"
    return str(pr.state)


class GitHubClient(GitProviderClient):
    """GitHub REST v3. ``base_url`` is ``https://<host>/api/v3`` for GitHub Enterprise.

    PyGithub's own retries (which sleep through rate limits) are off: Temporal retries."""

    provider = "github"

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: int = 30,
        seconds_between_requests: float | None = None,
        seconds_between_writes: float | None = None,
    ) -> None:
        # lazy=True: get_repo/get_issue/get_hook build URLs locally instead of fetching first.
        self._gh = github.Github(
            base_url=base_url.rstrip("/"),
            auth=github.Auth.Token(token),
            timeout=timeout,
            retry=None,
            per_page=100,
            seconds_between_requests=seconds_between_requests,
            seconds_between_writes=seconds_between_writes,
            lazy=True,
        )

    def _repo(self, repo: str) -> Any:
        return self._gh.get_repo(repo)

    def current_user(self) -> ProviderUser:
        with _errors():
            user = self._gh.get_user()
            user.complete()
            scopes = tuple(s.strip() for s in (self._gh.oauth_scopes or []) if s.strip())
            return ProviderUser(login=user.login, name=user.name or user.login, scopes=scopes)

    def list_repositories(self) -> list[Repository]:
        with _errors():
            return [
                Repository(
                    full_name=r.full_name,
                    default_branch=r.default_branch,
                    language=r.language,
                    topics=tuple(r.topics or ()),
                    private=bool(r.private),
                    fork=bool(r.fork),
                    archived=bool(r.archived),
                    clone_url=r.clone_url,
                    html_url=r.html_url,
                )
                for r in self._gh.get_user().get_repos()
            ]

    def list_branches(self, repo: str) -> list[Branch]:
        with _errors():
            return [Branch(name=b.name, sha=b.commit.sha) for b in self._repo(repo).get_branches()]

    def list_commits(self, repo: str, branch: str, limit: int = 30) -> list[Commit]:
        with _errors():
            return [
                Commit(
                    sha=c.sha,
                    message=c.commit.message,
                    author_name=c.commit.author.name if c.commit.author else "",
                    authored_at=c.commit.author.date if c.commit.author else None,
                    url=c.html_url,
                )
                for c in islice(self._repo(repo).get_commits(sha=branch), limit)
            ]

    def get_commit(self, repo: str, sha: str) -> Commit:
        # GET /repos/{owner}/{repo}/commits/{ref}: a full or abbreviated SHA (or a branch). Raw JSON,
        # because a lazy PyGithub Commit answers ``sha`` with the abbreviation it was made from.
        with _errors():
            _, c = self._gh.requester.requestJsonAndCheck("GET", f"/repos/{repo}/commits/{sha}")
            author = (c.get("commit") or {}).get("author") or {}
            return Commit(sha=c["sha"], message=(c.get("commit") or {}).get("message", ""),
                          author_name=author.get("name", ""), authored_at=parse_time(author.get("date")),
                          url=c.get("html_url", ""))

    def list_pull_requests(self, repo: str, state: ListState = "open") -> list[PullRequest]:
        with _errors():
            return [
                PullRequest(
                    number=p.number,
                    url=p.html_url,
                    state=_state(p),
                    title=p.title,
                    head=p.head.ref,
                    base=p.base.ref,
                )
                for p in self._repo(repo).get_pulls(state=state)
            ]

    def list_issues(self, repo: str, state: ListState = "open") -> list[Issue]:
        # GitHub's issues endpoint also lists pull requests, marked by a `pull_request` key that
        # plain issues lack. Reading that attribute through PyGithub's Issue makes it fetch every
        # issue again (an absent attribute triggers lazy completion), so read the raw JSON through
        # PyGithub's public requester instead: same auth, base URL and exceptions.
        issues: list[Issue] = []
        page = 1
        with _errors():
            while True:
                _, data = self._gh.requester.requestJsonAndCheck(
                    "GET", f"/repos/{repo}/issues", parameters={"state": state, "per_page": 100, "page": page}
                )
                issues += [
                    Issue(number=i["number"], title=i["title"], state=i["state"], url=i["html_url"])
                    for i in data
                    if "pull_request" not in i
                ]
                if len(data) < 100:
                    return issues
                page += 1

    def create_branch(self, repo: str, name: str, from_sha: str) -> Branch:
        with _errors():
            r = self._repo(repo)
            try:
                ref = r.create_git_ref(ref=f"refs/heads/{name}", sha=from_sha)
            except GithubException as exc:
                # An existing ref answers a bare 422; confirm by looking the ref up.
                if exc.status == 422 and self._ref_exists(r, name):
                    raise Conflict(f"branch {name!r} already exists in {repo}", provider="github",
                                   status=422) from exc
                raise
            return Branch(name=name, sha=ref.object.sha)

    @staticmethod
    def _ref_exists(r: Any, name: str) -> bool:
        try:
            r.get_git_ref(f"heads/{name}").complete()
        except GithubException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_pull_request(self, repo: str, title: str, head: str, base: str, body: str = "") -> PullRequest:
        with _errors():
            r = self._repo(repo)
            try:
                p = r.create_pull(base=base, head=head, title=title, body=body)
            except GithubException as exc:
                # A duplicate answers 422 with the free-text code "custom"; confirm by listing.
                owner = repo.split("/", 1)[0]
                if exc.status == 422 and r.get_pulls(state="open", head=f"{owner}:{head}", base=base).totalCount:
                    raise Conflict(f"an open pull request {head} → {base} already exists in {repo}",
                                   provider="github", status=422) from exc
                raise
            return PullRequest(number=p.number, url=p.html_url, state=_state(p), title=p.title,
                               head=p.head.ref, base=p.base.ref)

    def post_or_update_comment(self, repo: str, number: int, body: str, marker: str) -> Comment:
        text = with_marker(body, marker)
        with _errors():
            issue = self._repo(repo).get_issue(number)
            for existing in issue.get_comments():
                if has_marker(existing.body, marker):
                    existing.edit(text)
                    return Comment(id=str(existing.id), url=existing.html_url, created=False)
            c = issue.create_comment(text)
            return Comment(id=str(c.id), url=c.html_url, created=True)

    def set_commit_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        context: str,
        description: str = "",
        target_url: str | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"state": state, "context": context, "description": description}
        if target_url:
            kwargs["target_url"] = target_url
        with _errors():
            self._repo(repo).get_commit(sha).create_status(**kwargs)

    def _config(self, url: str, secret: str) -> dict[str, str]:
        return {"url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0"}

    def _events(self, events: list[str]) -> list[str]:
        self._check_events(events)
        return sorted({_EVENTS[e] for e in events})

    def create_webhook(self, repo: str, url: str, secret: str, events: list[str]) -> Webhook:
        native = self._events(events)
        with _errors():
            h = self._repo(repo).create_hook("web", self._config(url, secret), native, active=True)
            return Webhook(id=str(h.id), url=url, events=tuple(h.events))

    def update_webhook(self, repo: str, hook_id: str, url: str, secret: str, events: list[str]) -> Webhook:
        native = self._events(events)
        with _errors():
            h = self._repo(repo).get_hook(int(hook_id))
            h.edit("web", self._config(url, secret), events=native, active=True)
            return Webhook(id=str(hook_id), url=url, events=tuple(native))

    def delete_webhook(self, repo: str, hook_id: str) -> None:
        with _errors():
            self._repo(repo).get_hook(int(hook_id)).delete()

    def close(self) -> None:
        self._gh.close()
