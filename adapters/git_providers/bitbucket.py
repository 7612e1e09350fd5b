"""Bitbucket Cloud through its REST API 2.0 with httpx."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from adapters.git_providers._http import HttpxRequests
from adapters.git_providers.base import (
    Branch,
    Comment,
    Commit,
    CommitState,
    Conflict,
    GitProviderClient,
    Issue,
    ListState,
    NotFound,
    ProviderError,
    ProviderUser,
    PullRequest,
    Repository,
    Webhook,
    has_marker,
    parse_time,
    split_full_name,
    with_marker,
)

DEFAULT_BASE_URL = "https://api.bitbucket.org/2.0"

# Bitbucket has no release events; tag pushes arrive as repo:push.
_EVENTS: dict[str, tuple[str, ...]] = {
    "push": ("repo:push",),
    "tag_push": ("repo:push",),
    "pull_request": (
        "pullrequest:created",
        "pullrequest:updated",
        "pullrequest:fulfilled",
        "pullrequest:rejected",
    ),
    "issues": ("issue:created", "issue:updated"),
    "issue_comment": ("issue:comment_created", "pullrequest:comment_created"),
}
_STATUS = {"pending": "INPROGRESS", "success": "SUCCESSFUL", "failure": "FAILED", "error": "FAILED"}
_PR_STATES = {"open": ["OPEN"], "closed": ["MERGED", "DECLINED", "SUPERSEDED"],
              "all": ["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]}
_OPEN_ISSUE_STATES = ("new", "open", "on hold")
_PR_STATE = {"OPEN": "open", "MERGED": "merged", "DECLINED": "closed", "SUPERSEDED": "closed"}


def _auth_header(token: str) -> str:
    """``user:app_password`` uses Basic auth; anything else is an OAuth / access token (Bearer)."""
    if ":" in token:
        return "Basic " + base64.b64encode(token.encode()).decode()
    return f"Bearer {token}"


class BitbucketClient(HttpxRequests, GitProviderClient):
    """Bitbucket Cloud API 2.0; ``repo`` is ``workspace/repo_slug``."""

    provider = "bitbucket"
    label = "Bitbucket"
    webhook_events = frozenset(_EVENTS)

    def __init__(self, token: str, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": _auth_header(token), "Accept": "application/json"},
            timeout=timeout,
        )

    @staticmethod
    def _error_detail(body: Any) -> str:
        return (body.get("error") or {}).get("message", "")

    def _values(self, path: str, params: Any = None, limit: int | None = None) -> list[Any]:
        """Walk Bitbucket's paginated ``{values, next}`` envelopes."""
        items: list[Any] = []
        data = self._request("GET", path, params=params).json()
        while True:
            items.extend(data.get("values", []))
            if not data.get("next") or (limit and len(items) >= limit):
                return items[:limit] if limit else items
            # `next` is an absolute URL carrying the query; httpx keeps it as given.
            data = self._request("GET", data["next"]).json()

    @staticmethod
    def _repo_path(repo: str) -> str:
        workspace, slug = split_full_name(repo)
        return f"/repositories/{workspace}/{slug}"

    def current_user(self) -> ProviderUser:
        response = self._request("GET", "/user")
        data = response.json()
        # OAuth tokens report their scopes in X-OAuth-Scopes (comma separated).
        scopes = tuple(s.strip() for s in response.headers.get("x-oauth-scopes", "").split(",") if s.strip())
        login = data.get("username") or data.get("nickname") or data.get("account_id", "")
        return ProviderUser(login=login, name=data.get("display_name") or login, scopes=scopes)

    def list_repositories(self) -> list[Repository]:
        repos = []
        for r in self._values("/repositories", {"role": "member", "pagelen": 100}):
            links = r.get("links", {})
            clone = next((c["href"] for c in links.get("clone", []) if c.get("name") == "https"), "")
            repos.append(
                Repository(
                    full_name=r["full_name"],
                    default_branch=(r.get("mainbranch") or {}).get("name", ""),
                    language=r.get("language") or None,
                    topics=(),  # Bitbucket repositories have no topics
                    private=bool(r.get("is_private")),
                    fork="parent" in r and r["parent"] is not None,
                    archived=False,  # nor an archived flag
                    clone_url=clone,
                    html_url=links.get("html", {}).get("href", ""),
                )
            )
        return repos

    def list_branches(self, repo: str) -> list[Branch]:
        return [Branch(name=b["name"], sha=b["target"]["hash"])
                for b in self._values(f"{self._repo_path(repo)}/refs/branches", {"pagelen": 100})]

    def list_commits(self, repo: str, branch: str, limit: int = 30) -> list[Commit]:
        commits = self._values(f"{self._repo_path(repo)}/commits/{branch}",
                               {"pagelen": min(limit, 100)}, limit=limit)
        return [self._commit(c) for c in commits]

    def get_commit(self, repo: str, sha: str) -> Commit:
        # GET /2.0/repositories/{workspace}/{repo_slug}/commit/{commit} takes any revision,
        # also the 12-character hash Bitbucket's own webhooks carry.
        return self._commit(self._request("GET", f"{self._repo_path(repo)}/commit/{sha}").json())

    @staticmethod
    def _commit(c: dict[str, Any]) -> Commit:
        return Commit(
            sha=c["hash"],
            message=c.get("message", ""),
            author_name=((c.get("author") or {}).get("user") or {}).get("display_name")
            or (c.get("author") or {}).get("raw", ""),
            authored_at=parse_time(c.get("date")),
            url=c.get("links", {}).get("html", {}).get("href", ""),
        )

    @staticmethod
    def _pull(p: dict[str, Any]) -> PullRequest:
        return PullRequest(
            number=p["id"],
            url=p.get("links", {}).get("html", {}).get("href", ""),
            state=_PR_STATE.get(p.get("state", ""), "open"),
            title=p.get("title", ""),
            head=p["source"]["branch"]["name"],
            base=p["destination"]["branch"]["name"],
        )

    def list_pull_requests(self, repo: str, state: ListState = "open") -> list[PullRequest]:
        params = [("state", s) for s in _PR_STATES[state]] + [("pagelen", "50")]
        return [self._pull(p) for p in self._values(f"{self._repo_path(repo)}/pullrequests", params)]

    def list_issues(self, repo: str, state: ListState = "open") -> list[Issue]:
        # Bitbucket issue states are new/open/on hold/resolved/...; BBQL filters server side.
        params: dict[str, Any] = {"pagelen": 50}
        if state != "all":
            clauses = [f'state="{s}"' for s in _OPEN_ISSUE_STATES]
            params["q"] = " OR ".join(clauses) if state == "open" else "NOT (" + " OR ".join(clauses) + ")"
        return [
            Issue(number=i["id"], title=i.get("title", ""),
                  state="open" if i.get("state") in _OPEN_ISSUE_STATES else "closed",
                  url=i.get("links", {}).get("html", {}).get("href", ""))
            for i in self._values(f"{self._repo_path(repo)}/issues", params)
        ]

    def create_branch(self, repo: str, name: str, from_sha: str) -> Branch:
        path = f"{self._repo_path(repo)}/refs/branches"
        try:
            b = self._request("POST", path, json={"name": name, "target": {"hash": from_sha}}).json()
        except ProviderError as exc:
            # An existing branch answers a plain 400; confirm by looking the branch up.
            if exc.status == 400 and self._branch_exists(path, name):
                raise Conflict(f"branch {name!r} already exists in {repo}", provider="bitbucket",
                               status=400) from exc
            raise
        return Branch(name=b["name"], sha=b["target"]["hash"])

    def _branch_exists(self, path: str, name: str) -> bool:
        try:
            self._request("GET", f"{path}/{name}")
        except NotFound:
            return False
        return True

    def create_pull_request(self, repo: str, title: str, head: str, base: str, body: str = "") -> PullRequest:
        p = self._request(
            "POST",
            f"{self._repo_path(repo)}/pullrequests",
            json={"title": title, "description": body, "source": {"branch": {"name": head}},
                  "destination": {"branch": {"name": base}}},
        ).json()
        return self._pull(p)

    def post_or_update_comment(self, repo: str, number: int, body: str, marker: str) -> Comment:
        """Pull request comments (``number`` is the PR id)."""
        text = with_marker(body, marker)
        path = f"{self._repo_path(repo)}/pullrequests/{number}/comments"
        for existing in self._values(path, {"pagelen": 100}):
            if has_marker((existing.get("content") or {}).get("raw"), marker):
                c = self._request("PUT", f"{path}/{existing['id']}", json={"content": {"raw": text}}).json()
                return Comment(id=str(c["id"]), url=c.get("links", {}).get("html", {}).get("href", ""),
                               created=False)
        c = self._request("POST", path, json={"content": {"raw": text}}).json()
        return Comment(id=str(c["id"]), url=c.get("links", {}).get("html", {}).get("href", ""), created=True)

    def set_commit_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        context: str,
        description: str = "",
        target_url: str | None = None,
    ) -> None:
        path = self._repo_path(repo)
        if not target_url:
            # Bitbucket requires a link on every build status; fall back to the commit's page.
            commit = self._request("GET", f"{path}/commit/{sha}").json()
            target_url = commit.get("links", {}).get("html", {}).get("href", "")
        self._request(
            "POST",
            f"{path}/commit/{sha}/statuses/build",
            # `key` identifies the status (like GitHub's context) and is limited to 40 characters.
            json={"key": context[:40], "name": context, "state": _STATUS[state],
                  "description": description, "url": target_url},
        )

    def _hook_body(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        self._check_events(events)
        return {
            "description": "devops-orchestrator",
            "url": url,
            "active": True,
            "secret": secret,
            "events": sorted({native for e in events for native in _EVENTS[e]}),
        }

    def create_webhook(self, repo: str, url: str, secret: str, events: list[str]) -> Webhook:
        h = self._request("POST", f"{self._repo_path(repo)}/hooks", json=self._hook_body(url, secret, events)).json()
        return Webhook(id=h["uuid"], url=url, events=tuple(h.get("events", ())))

    def update_webhook(self, repo: str, hook_id: str, url: str, secret: str, events: list[str]) -> Webhook:
        h = self._request("PUT", f"{self._repo_path(repo)}/hooks/{hook_id}",
                          json=self._hook_body(url, secret, events)).json()
        return Webhook(id=h["uuid"], url=url, events=tuple(h.get("events", ())))

    def delete_webhook(self, repo: str, hook_id: str) -> None:
        self._request("DELETE", f"{self._repo_path(repo)}/hooks/{hook_id}")

    def close(self) -> None:
        self._http.close()
