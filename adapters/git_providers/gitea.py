"""Gitea (and Forgejo) through its REST API v1 with httpx."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.git_providers._http import HttpxRequests
from adapters.git_providers.base import (
    Branch,
    Comment,
    Commit,
    CommitState,
    GitProviderClient,
    Issue,
    ListState,
    ProviderUser,
    PullRequest,
    Repository,
    Webhook,
    has_marker,
    parse_time,
    split_full_name,
    with_marker,
)

_EVENTS = {
    "push": "push",
    "tag_push": "create",
    "pull_request": "pull_request",
    "issues": "issues",
    "issue_comment": "issue_comment",
    "release": "release",
}
_PAGE = 50


class GiteaClient(HttpxRequests, GitProviderClient):
    """Gitea API v1. ``base_url`` is the server (``https://gitea.example.com``); ``/api/v1`` is added."""

    provider = "gitea"
    label = "Gitea"

    def __init__(self, token: str, base_url: str, *, timeout: float = 30.0) -> None:
        root = base_url.rstrip("/")
        if not root.endswith("/api/v1"):
            root += "/api/v1"
        self._http = httpx.Client(
            base_url=root,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
            timeout=timeout,
        )

    @staticmethod
    def _error_detail(body: Any) -> str:
        return body.get("message", "")

    def _pages(self, path: str, params: dict[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Follow Gitea's page/limit pagination until a short page (or ``limit`` items)."""
        items: list[Any] = []
        page = 1
        size = min(_PAGE, limit) if limit else _PAGE
        while True:
            batch = self._request("GET", path, params={**(params or {}), "page": page, "limit": size}).json()
            items.extend(batch)
            if len(batch) < size or (limit and len(items) >= limit):
                return items[:limit] if limit else items
            page += 1

    @staticmethod
    def _repo_path(repo: str) -> str:
        owner, name = split_full_name(repo)
        return f"/repos/{owner}/{name}"

    def current_user(self) -> ProviderUser:
        # Gitea does not report a token's scopes over the API.
        data = self._request("GET", "/user").json()
        return ProviderUser(login=data["login"], name=data.get("full_name") or data["login"])

    def list_repositories(self) -> list[Repository]:
        return [
            Repository(
                full_name=r["full_name"],
                default_branch=r.get("default_branch") or "",
                language=r.get("language") or None,
                topics=tuple(r.get("topics") or ()),
                private=bool(r.get("private")),
                fork=bool(r.get("fork")),
                archived=bool(r.get("archived")),
                clone_url=r["clone_url"],
                html_url=r["html_url"],
            )
            for r in self._pages("/user/repos")
        ]

    def list_branches(self, repo: str) -> list[Branch]:
        return [Branch(name=b["name"], sha=b["commit"]["id"])
                for b in self._pages(f"{self._repo_path(repo)}/branches")]

    def list_commits(self, repo: str, branch: str, limit: int = 30) -> list[Commit]:
        commits = self._pages(f"{self._repo_path(repo)}/commits",
                              {"sha": branch, "stat": "false", "files": "false"}, limit=limit)
        return [self._commit(c) for c in commits]

    def get_commit(self, repo: str, sha: str) -> Commit:
        # GET /repos/{owner}/{repo}/git/commits/{sha}: a full or abbreviated SHA.
        return self._commit(self._request("GET", f"{self._repo_path(repo)}/git/commits/{sha}",
                                          params={"stat": "false", "files": "false"}).json())

    @staticmethod
    def _commit(c: dict[str, Any]) -> Commit:
        return Commit(
            sha=c["sha"],
            message=c["commit"]["message"],
            author_name=(c["commit"].get("author") or {}).get("name", ""),
            authored_at=parse_time((c["commit"].get("author") or {}).get("date")),
            url=c.get("html_url", ""),
        )

    @staticmethod
    def _pull(p: dict[str, Any]) -> PullRequest:
        state = "merged" if p.get("merged") else p["state"]
        return PullRequest(number=p["number"], url=p["html_url"], state=state, title=p.get("title", ""),
                           head=p["head"]["ref"], base=p["base"]["ref"])

    def list_pull_requests(self, repo: str, state: ListState = "open") -> list[PullRequest]:
        return [self._pull(p) for p in self._pages(f"{self._repo_path(repo)}/pulls", {"state": state})]

    def list_issues(self, repo: str, state: ListState = "open") -> list[Issue]:
        issues = self._pages(f"{self._repo_path(repo)}/issues", {"state": state, "type": "issues"})
        return [Issue(number=i["number"], title=i["title"], state=i["state"], url=i["html_url"])
                for i in issues]

    def create_branch(self, repo: str, name: str, from_sha: str) -> Branch:
        # old_ref_name (Gitea ≥ 1.21) accepts a commit sha; 409 when the branch exists.
        b = self._request("POST", f"{self._repo_path(repo)}/branches",
                          json={"new_branch_name": name, "old_ref_name": from_sha}).json()
        return Branch(name=b["name"], sha=b["commit"]["id"])

    def create_pull_request(self, repo: str, title: str, head: str, base: str, body: str = "") -> PullRequest:
        p = self._request("POST", f"{self._repo_path(repo)}/pulls",
                          json={"title": title, "head": head, "base": base, "body": body}).json()
        return self._pull(p)

    def post_or_update_comment(self, repo: str, number: int, body: str, marker: str) -> Comment:
        """Issue comments, which Gitea also uses for pull requests."""
        text = with_marker(body, marker)
        path = self._repo_path(repo)
        for existing in self._pages(f"{path}/issues/{number}/comments"):
            if has_marker(existing.get("body"), marker):
                c = self._request("PATCH", f"{path}/issues/comments/{existing['id']}", json={"body": text}).json()
                return Comment(id=str(c["id"]), url=c.get("html_url", ""), created=False)
        c = self._request("POST", f"{path}/issues/{number}/comments", json={"body": text}).json()
        return Comment(id=str(c["id"]), url=c.get("html_url", ""), created=True)

    def set_commit_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        context: str,
        description: str = "",
        target_url: str | None = None,
    ) -> None:
        payload: dict[str, Any] = {"state": state, "context": context, "description": description}
        if target_url:
            payload["target_url"] = target_url
        self._request("POST", f"{self._repo_path(repo)}/statuses/{sha}", json=payload)

    def _hook_body(self, url: str, secret: str, events: list[str]) -> dict[str, Any]:
        self._check_events(events)
        return {
            "config": {"url": url, "content_type": "json", "secret": secret},
            "events": sorted({_EVENTS[e] for e in events}),
            "active": True,
        }

    def create_webhook(self, repo: str, url: str, secret: str, events: list[str]) -> Webhook:
        body = {"type": "gitea", **self._hook_body(url, secret, events)}
        h = self._request("POST", f"{self._repo_path(repo)}/hooks", json=body).json()
        return Webhook(id=str(h["id"]), url=url, events=tuple(h.get("events") or body["events"]))

    def update_webhook(self, repo: str, hook_id: str, url: str, secret: str, events: list[str]) -> Webhook:
        body = self._hook_body(url, secret, events)
        h = self._request("PATCH", f"{self._repo_path(repo)}/hooks/{hook_id}", json=body).json()
        return Webhook(id=str(h["id"]), url=url, events=tuple(h.get("events") or body["events"]))

    def delete_webhook(self, repo: str, hook_id: str) -> None:
        self._request("DELETE", f"{self._repo_path(repo)}/hooks/{hook_id}")

    def close(self) -> None:
        self._http.close()
