"""In-memory fake GitHub, GitLab, Gitea and Bitbucket servers for the git provider client tests.

Each fake is one Starlette app served by uvicorn in a thread on 127.0.0.1 (free port), speaking the
provider's documented JSON shapes for just the endpoints our clients call, so PyGithub,
python-gitlab and httpx make real HTTP requests. Switches simulate a rate limit or an outage;
the stored comments, statuses, hooks and branches are plain attributes for assertions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "good-token"
RETRY_AFTER = 30


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class FakeRepo:
    """One repository's state, the same for every provider."""

    full_name: str
    default_branch: str
    language: str | None
    topics: list[str]
    private: bool
    fork: bool
    archived: bool
    id: int
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)


def seed_repos() -> dict[str, FakeRepo]:
    """acme/web: private, Python, open PR #1 (feature → main), merged PR #4, issues #2 (open), #3
    (closed). acme/legacy: public fork, archived, no language."""
    web = FakeRepo("acme/web", "main", "Python", ["ci", "web"], True, False, False, id=11)
    commits = [
        {"sha": sha(f"main-{i}"), "message": f"Commit {i}", "author": "Ada Lovelace",
         "date": f"2026-01-0{i}T10:00:00Z"}
        for i in (3, 2, 1)
    ]
    web.commits = {"main": commits, "develop": commits[1:], "feature": [
        {"sha": sha("feature-1"), "message": "Feature work", "author": "Grace Hopper",
         "date": "2026-01-04T10:00:00Z"}, *commits]}
    web.branches = {name: cs[0]["sha"] for name, cs in web.commits.items()}
    web.pulls = [
        {"number": 1, "title": "Add feature", "state": "open", "merged": False, "head": "feature",
         "base": "main", "body": ""},
        {"number": 4, "title": "Old change", "state": "closed", "merged": True, "head": "develop",
         "base": "main", "body": ""},
    ]
    web.issues = [
        {"number": 2, "title": "Bug", "state": "open"},
        {"number": 3, "title": "Old bug", "state": "closed"},
    ]
    legacy = FakeRepo("acme/legacy", "master", None, [], False, True, True, id=12)
    legacy.commits = {"master": [{"sha": sha("legacy"), "message": "Init", "author": "Ada Lovelace",
                                  "date": "2020-01-01T00:00:00Z"}]}
    legacy.branches = {"master": sha("legacy")}
    return {r.full_name: r for r in (web, legacy)}


Handler = Callable[..., Awaitable[Response] | Response]


class FakeProviderServer:
    """Shared machinery: state, switches, guard (auth / rate limit / outage), uvicorn thread."""

    prefix = ""
    scopes = ""

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.reset()

    # --- state and switches -------------------------------------------------------------------
    def reset(self) -> None:
        self.repos = seed_repos()
        self.outage: int | None = None
        self.rate_limited = False
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(100)
        self.oauth_reset()

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What the client is configured with."""
        return self.origin + self.prefix

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return self.repos[repo].comments.get(number, [])

    def statuses(self, repo: str) -> list[dict[str, Any]]:
        return self.repos[repo].statuses

    def hooks(self, repo: str) -> dict[str, dict[str, Any]]:
        return self.repos[repo].hooks

    def find_commit(self, r: FakeRepo, wanted: str) -> dict[str, Any] | None:
        """The commit a full or abbreviated SHA names, as the providers resolve it: a unique prefix
        of a listed commit or of a branch head (``make_git_repo`` commits are only heads)."""
        known = {c["sha"]: c for c in itertools.chain.from_iterable(r.commits.values())}
        for branch, head in r.branches.items():
            known.setdefault(head, {"sha": head, "message": f"Commit on {branch}", "author": "Ada",
                                    "date": "2026-01-05T10:00:00Z"})
        found = [c for full, c in known.items() if len(wanted) >= 4 and full.startswith(wanted.lower())]
        return found[0] if len(found) == 1 else None

    # --- provider specifics, overridden ------------------------------------------------------
    def token_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        return value if scheme.lower() in ("token", "bearer") else None

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"message": message}, status_code=status, headers=headers)

    def rate_limit_response(self) -> Response:
        return self.error(429, "Too Many Requests", {"Retry-After": str(RETRY_AFTER)})

    def routes(self) -> list[Route]:
        raise NotImplementedError

    # --- plumbing ------------------------------------------------------------------------------
    def repo(self, request: Request) -> FakeRepo | None:
        p = request.path_params
        name = p.get("project") or f"{p.get('owner')}/{p.get('name')}"
        if name.isdigit():
            return next((r for r in self.repos.values() if r.id == int(name)), None)
        return self.repos.get(name)

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.requests.append((request.method, request.url.path))
            if self.outage:
                return self.error(self.outage, "Internal Server Error")
            if not self.token_accepted(request):
                return self.error(401, "Bad credentials")
            if self.rate_limited:
                return self.rate_limit_response()
            if "owner" in request.path_params or "project" in request.path_params:
                repo = self.repo(request)
                if repo is None:
                    return self.error(404, "Not Found")
                result = handler(request, repo)
            else:
                result = handler(request)
            return await result if isinstance(result, Awaitable) else result

        return endpoint

    def route(self, path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(self.prefix + path, self.guarded(handler), methods=methods)

    def start(self) -> FakeProviderServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[*self.routes(), *self.git_routes(), *self.oauth_routes()])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- git over smart HTTP (private checkout tests) ----------------------------------------
    # `/{owner}/{name}.git/...` runs `git http-backend` as CGI over bare repositories made by
    # `make_git_repo`, behind HTTP Basic auth whose password must be TOKEN (any user name), so
    # the repositories' clone_url (`{origin}/{full_name}.git`) is clonable with the credential.
    @property
    def git_root(self) -> Path:
        if getattr(self, "_git_root", None) is None:
            self._git_root = Path(tempfile.mkdtemp(prefix=f"fake-{type(self).__name__.lower()}-git-"))
        return self._git_root

    def make_git_repo(self, full_name: str, files: dict[str, str] | None = None, branch: str | None = None) -> str:
        """A bare repository for ``full_name`` with one commit of ``files`` on ``branch`` (default:
        the fake repo's default branch, which then points at it); returns the commit SHA."""
        fake = self.repos.get(full_name)
        branch = branch or (fake.default_branch if fake else "main")
        bare = self.git_root / f"{full_name}.git"
        env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.test",
               "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.test", "GIT_CONFIG_NOSYSTEM": "1"}
        with tempfile.TemporaryDirectory() as work:
            def git(*args: str, cwd: str | Path = work) -> str:
                return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                                      text=True).stdout.strip()

            git("init", "--quiet", "--initial-branch", branch)
            for name, content in (files or {"README.md": f"# {full_name}\n"}).items():
                (Path(work) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(work) / name).write_text(content)
            git("add", "--all")
            git("commit", "--quiet", "-m", f"Commit on {branch}")
            commit = git("rev-parse", "HEAD")
            if not bare.exists():
                bare.parent.mkdir(parents=True, exist_ok=True)
                git("init", "--quiet", "--bare", "--initial-branch", branch, str(bare))
            git("push", "--quiet", "--force", str(bare), f"HEAD:refs/heads/{branch}")
        if fake is not None:
            fake.branches[branch] = commit
        return commit

    def git_routes(self) -> list[Route]:
        async def backend(request: Request) -> Response:
            self.requests.append((request.method, request.url.path))
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            try:
                password = base64.b64decode(value).decode().partition(":")[2] if scheme.lower() == "basic" else None
            except ValueError:
                password = None
            if password != TOKEN and password not in self.oauth_access_tokens:
                return Response("Authentication required\n", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="fake git"'})
            p = request.path_params
            env = {"PATH": os.environ.get("PATH", ""), "GIT_PROJECT_ROOT": str(self.git_root),
                   "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": request.method,
                   "PATH_INFO": f"/{p['owner']}/{p['name']}.git/{p['path']}",
                   "QUERY_STRING": request.url.query, "CONTENT_TYPE": request.headers.get("content-type", ""),
                   "REMOTE_USER": "git", "REMOTE_ADDR": "127.0.0.1"}
            if "content-encoding" in request.headers:
                env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
            if "git-protocol" in request.headers:
                env["GIT_PROTOCOL"] = request.headers["git-protocol"]
            body = await request.body()
            done = await asyncio.to_thread(subprocess.run, ["git", "http-backend"], input=body, env=env,
                                           capture_output=True, check=False)
            # CGI output: headers, a blank line (CRLF or LF), the body.
            ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := done.stdout.find(sep)) >= 0]
            cut, size = min(ends) if ends else (len(done.stdout), 0)
            head, content = done.stdout[:cut], done.stdout[cut + size:]
            status, headers = 200, {}
            for line in head.decode(errors="replace").splitlines():
                key, _, val = line.partition(":")
                if key.lower() == "status":
                    status = int(val.split()[0])
                elif key.strip():
                    headers[key.strip()] = val.strip()
            return Response(content, status_code=status, headers=headers)

        return [Route("/{owner}/{name}.git/{path:path}", backend, methods=["GET", "POST"])]

    # --- OAuth authorization-code flow (tests/api/test_oauth.py) -------------------------------
    # The web origin serves the provider's documented authorize endpoint, which approves at once
    # (302 back to redirect_uri with code and state; error=access_denied when `oauth_deny`), and its
    # token endpoint: codes are single-use and bound to their redirect_uri, refresh tokens rotate,
    # a wrong client secret gets the provider's own error. Issued access tokens open the API like
    # TOKEN. Subclasses set the paths, error names and answer shapes in their OAuth section.
    OAUTH_CLIENT_ID = "fake-oauth-client-id"
    OAUTH_CLIENT_SECRET = "fake-oauth-client-secret"
    oauth_paths = ("/login/oauth/authorize", "/login/oauth/access_token")
    oauth_expires_in = 7200
    oauth_default_scope = "read"
    oauth_bad_client: tuple[str, int] = ("invalid_client", 401)
    oauth_bad_code = "invalid_grant"
    oauth_bad_refresh = "invalid_grant"
    oauth_bad_redirect = "invalid_grant"

    def oauth_reset(self) -> None:
        self.oauth_deny = False
        self.oauth_codes: dict[str, dict[str, str]] = {}
        self.oauth_access_tokens: set[str] = set()
        self.oauth_refresh_tokens: set[str] = set()
        self.oauth_grants: list[str] = []  # grant_type of every token request, in order

    def token_accepted(self, request: Request) -> bool:
        token = self.token_of(request)
        return token == TOKEN or (token is not None and token in self.oauth_access_tokens)

    async def oauth_form(self, request: Request) -> dict[str, str]:
        if request.headers.get("content-type", "").startswith("application/json"):
            return {k: str(v) for k, v in (await request.json()).items()}
        return dict(parse_qsl((await request.body()).decode()))  # no python-multipart here

    def oauth_client(self, request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        """(client_id, client_secret) as the provider takes them: the form here, Basic on Bitbucket."""
        return form.get("client_id"), form.get("client_secret")

    def oauth_error(self, request: Request, error: str, description: str, status: int = 400) -> Response:
        return _json({"error": error, "error_description": description}, status)

    def oauth_token_json(self, access: str, refresh: str, scope: str) -> dict[str, Any]:
        return {"access_token": access, "token_type": "bearer", "expires_in": self.oauth_expires_in,
                "refresh_token": refresh, "scope": scope}

    def oauth_token_response(self, request: Request, data: dict[str, Any]) -> Response:
        return _json(data)

    def oauth_issue(self, request: Request, scope: str) -> Response:
        access, refresh = f"oauth-access-{secrets.token_hex(12)}", f"oauth-refresh-{secrets.token_hex(12)}"
        self.oauth_access_tokens.add(access)
        self.oauth_refresh_tokens.add(refresh)
        return self.oauth_token_response(request, self.oauth_token_json(access, refresh, scope))

    def oauth_routes(self) -> list[Route]:
        def authorize(request: Request) -> Response:
            q = request.query_params
            if q.get("client_id") != self.OAUTH_CLIENT_ID or not q.get("redirect_uri"):
                return Response("unknown client_id or no redirect_uri", status_code=404)  # an HTML page, really
            params: dict[str, str] = {}
            if q.get("response_type") != "code":
                params["error"] = "unsupported_response_type"
            elif self.oauth_deny:
                params.update(error="access_denied", error_description="The user denied the request.")
            else:
                code = secrets.token_urlsafe(16)
                self.oauth_codes[code] = {"redirect_uri": q["redirect_uri"],
                                          "scope": q.get("scope") or self.oauth_default_scope}
                params["code"] = code
            if "state" in q:
                params["state"] = q["state"]
            target = q["redirect_uri"]
            return Response(status_code=302,
                            headers={"Location": f"{target}{'&' if '?' in target else '?'}{urlencode(params)}"})

        async def token(request: Request) -> Response:
            form = await self.oauth_form(request)
            client_id, client_secret = self.oauth_client(request, form)
            grant = form.get("grant_type") or ("refresh_token" if "refresh_token" in form else "authorization_code")
            self.oauth_grants.append(grant)
            if client_id != self.OAUTH_CLIENT_ID or client_secret != self.OAUTH_CLIENT_SECRET:
                error, status = self.oauth_bad_client
                return self.oauth_error(request, error, "Client authentication failed.", status)
            if grant == "authorization_code":
                issued = self.oauth_codes.pop(form.get("code", ""), None)  # single use, even when refused below
                if issued is None:
                    return self.oauth_error(request, self.oauth_bad_code, "The code is incorrect or expired.")
                if form.get("redirect_uri", issued["redirect_uri"]) != issued["redirect_uri"]:
                    return self.oauth_error(request, self.oauth_bad_redirect, "The redirect_uri does not match.")
                return self.oauth_issue(request, issued["scope"])
            if grant == "refresh_token":
                old = form.get("refresh_token", "")
                if old not in self.oauth_refresh_tokens:
                    return self.oauth_error(request, self.oauth_bad_refresh, "The refresh token is invalid.")
                self.oauth_refresh_tokens.discard(old)  # rotation: a refresh token works once
                return self.oauth_issue(request, self.oauth_default_scope)
            return self.oauth_error(request, "unsupported_grant_type", "Unsupported grant type.")

        authorize_path, token_path = self.oauth_paths
        return [Route(authorize_path, authorize, methods=["GET"]), Route(token_path, token, methods=["POST"])]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


# ======================================================================================= GitHub
class FakeGitHub(FakeProviderServer):
    """GitHub REST v3 as served by GitHub Enterprise under ``/api/v3``."""

    prefix = "/api/v3"
    scopes = "repo, admin:repo_hook, read:user"

    # --- OAuth (GitHub: errors answer 200, form-encoded unless Accept: application/json) ----------
    oauth_expires_in = 28800  # expiring user-to-server tokens, with refresh tokens
    oauth_default_scope = "repo,read:user"
    oauth_bad_client = ("incorrect_client_credentials", 200)
    oauth_bad_code = "bad_verification_code"
    oauth_bad_refresh = "bad_refresh_token"
    oauth_bad_redirect = "redirect_uri_mismatch"

    def oauth_error(self, request: Request, error: str, description: str, status: int = 400) -> Response:
        return self.oauth_token_response(request, {
            "error": error, "error_description": description,
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"})

    def oauth_token_json(self, access: str, refresh: str, scope: str) -> dict[str, Any]:
        return {"access_token": access, "expires_in": self.oauth_expires_in, "refresh_token": refresh,
                "refresh_token_expires_in": 15897600, "scope": ",".join(scope.replace(",", " ").split()),
                "token_type": "bearer"}

    def oauth_token_response(self, request: Request, data: dict[str, Any]) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return _json(data)
        return Response(urlencode(data), media_type="application/x-www-form-urlencoded")

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return _json({"message": message, "documentation_url": "https://docs.github.com/rest"}, status, headers)

    def rate_limit_response(self) -> Response:
        # Primary rate limit: 403 with remaining 0 and the reset time as epoch seconds.
        return self.error(403, "API rate limit exceeded for user ID 1.", {
            "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Used": "5000",
            "X-RateLimit-Reset": str(int(time.time()) + RETRY_AFTER), "X-RateLimit-Resource": "core"})

    def api(self, path: str) -> str:
        return self.base_url + path

    def repo_json(self, r: FakeRepo) -> dict[str, Any]:
        owner, name = r.full_name.split("/")
        return {
            "id": r.id, "node_id": f"R_{r.id}", "name": name, "full_name": r.full_name,
            "owner": {"login": owner, "id": 1, "type": "Organization"},
            "private": r.private, "fork": r.fork, "archived": r.archived, "disabled": False,
            "html_url": f"{self.origin}/{r.full_name}", "url": self.api(f"/repos/{r.full_name}"),
            "clone_url": f"{self.origin}/{r.full_name}.git", "ssh_url": f"git@127.0.0.1:{r.full_name}.git",
            "default_branch": r.default_branch, "language": r.language, "topics": r.topics,
            "visibility": "private" if r.private else "public",
        }

    def pull_json(self, r: FakeRepo, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": 1000 + p["number"], "number": p["number"], "title": p["title"], "state": p["state"],
            "body": p["body"], "merged_at": "2026-01-05T10:00:00Z" if p["merged"] else None,
            "html_url": f"{self.origin}/{r.full_name}/pull/{p['number']}",
            "url": self.api(f"/repos/{r.full_name}/pulls/{p['number']}"),
            "head": {"ref": p["head"], "sha": r.branches.get(p["head"], "")},
            "base": {"ref": p["base"], "sha": r.branches.get(p["base"], "")},
            "user": {"login": "octocat"},
        }

    def comment_json(self, r: FakeRepo, c: dict[str, Any]) -> dict[str, Any]:
        return {"id": c["id"], "body": c["body"], "user": {"login": "octocat"},
                "url": self.api(f"/repos/{r.full_name}/issues/comments/{c['id']}"),
                "html_url": f"{self.origin}/{r.full_name}/issues/{c['number']}#issuecomment-{c['id']}"}

    def hook_json(self, r: FakeRepo, h: dict[str, Any]) -> dict[str, Any]:
        config = {k: v for k, v in h["config"].items() if k != "secret"}
        if "secret" in h["config"]:
            config["secret"] = "********"  # GitHub never echoes the secret
        return {"id": int(h["id"]), "type": "Repository", "name": "web", "active": h["active"],
                "events": h["events"], "config": config,
                "url": self.api(f"/repos/{r.full_name}/hooks/{h['id']}")}

    def routes(self) -> list[Route]:
        def user(request: Request) -> Response:
            return _json({"login": "octocat", "id": 1, "name": "The Octocat", "type": "User",
                          "url": self.api("/users/octocat")},
                         headers={"X-OAuth-Scopes": self.scopes, "X-Accepted-OAuth-Scopes": ""})

        def user_repos(request: Request) -> Response:
            return _json([self.repo_json(r) for r in self.repos.values()])

        def branches(request: Request, r: FakeRepo) -> Response:
            return _json([{"name": n, "commit": {"sha": s, "url": self.api(f"/repos/{r.full_name}/commits/{s}")},
                           "protected": n == r.default_branch} for n, s in r.branches.items()])

        def commit_json(r: FakeRepo, c: dict[str, Any]) -> dict[str, Any]:
            return {"sha": c["sha"], "url": self.api(f"/repos/{r.full_name}/commits/{c['sha']}"),
                    "html_url": f"{self.origin}/{r.full_name}/commit/{c['sha']}",
                    "commit": {"message": c["message"],
                               "author": {"name": c["author"], "email": "a@example.com", "date": c["date"]}}}

        def commits(request: Request, r: FakeRepo) -> Response:
            branch = request.query_params.get("sha", r.default_branch)
            if branch not in r.commits:
                return self.error(404, "Not Found")
            return _json([commit_json(r, c) for c in r.commits[branch]])

        def commit(request: Request, r: FakeRepo) -> Response:
            c = self.find_commit(r, request.path_params["sha"])
            # GitHub answers an unknown commit with 422, not 404
            return _json(commit_json(r, c)) if c else self.error(422, f"No commit found for SHA: {request.path_params['sha']}")

        def pulls(request: Request, r: FakeRepo) -> Response:
            state = request.query_params.get("state", "open")
            # `head` filters as "owner:branch", `base` by branch name.
            head = request.query_params.get("head", "").partition(":")[2]
            base = request.query_params.get("base")
            return _json([self.pull_json(r, p) for p in r.pulls if state in ("all", p["state"])
                          and (not head or p["head"] == head) and (not base or p["base"] == base)])

        async def create_pull(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            if any(p["head"] == body["head"] and p["base"] == body["base"] and p["state"] == "open"
                   for p in r.pulls):
                return _json({"message": "Validation Failed", "errors": [
                    {"resource": "PullRequest", "code": "custom",
                     "message": f"A pull request already exists for acme:{body['head']}."}]}, 422)
            p = {"number": self.next_id(), "title": body["title"], "state": "open", "merged": False,
                 "head": body["head"], "base": body["base"], "body": body.get("body") or ""}
            r.pulls.append(p)
            return _json(self.pull_json(r, p), 201)

        def issues(request: Request, r: FakeRepo) -> Response:
            state = request.query_params.get("state", "open")
            items = [{"number": i["number"], "title": i["title"], "state": i["state"],
                      "html_url": f"{self.origin}/{r.full_name}/issues/{i['number']}",
                      "url": self.api(f"/repos/{r.full_name}/issues/{i['number']}")}
                     for i in r.issues if state in ("all", i["state"])]
            # GitHub lists pull requests among issues, marked by a `pull_request` object.
            items += [{"number": p["number"], "title": p["title"], "state": p["state"],
                       "html_url": f"{self.origin}/{r.full_name}/pull/{p['number']}",
                       "url": self.api(f"/repos/{r.full_name}/issues/{p['number']}"),
                       "pull_request": {"url": self.api(f"/repos/{r.full_name}/pulls/{p['number']}")}}
                      for p in r.pulls if state in ("all", p["state"])]
            return _json(items)

        def issue_comments(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["number"])
            return _json([self.comment_json(r, c) for c in r.comments.get(n, [])])

        async def create_issue_comment(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["number"])
            c = {"id": self.next_id(), "number": n, "body": (await request.json())["body"]}
            r.comments.setdefault(n, []).append(c)
            return _json(self.comment_json(r, c), 201)

        async def edit_issue_comment(request: Request, r: FakeRepo) -> Response:
            cid = int(request.path_params["id"])
            for c in itertools.chain.from_iterable(r.comments.values()):
                if c["id"] == cid:
                    c["body"] = (await request.json())["body"]
                    return _json(self.comment_json(r, c))
            return self.error(404, "Not Found")

        async def create_ref(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            name = body["ref"].removeprefix("refs/heads/")
            if name in r.branches:
                return self.error(422, "Reference already exists")
            r.branches[name] = body["sha"]
            return _json({"ref": body["ref"], "node_id": "REF_1",
                          "url": self.api(f"/repos/{r.full_name}/git/refs/heads/{name}"),
                          "object": {"sha": body["sha"], "type": "commit",
                                     "url": self.api(f"/repos/{r.full_name}/git/commits/{body['sha']}")}}, 201)

        def get_ref(request: Request, r: FakeRepo) -> Response:
            name = request.path_params["ref"].removeprefix("heads/")
            if name not in r.branches:
                return self.error(404, "Not Found")
            return _json({"ref": f"refs/heads/{name}", "url": self.api(f"/repos/{r.full_name}/git/refs/heads/{name}"),
                          "object": {"sha": r.branches[name], "type": "commit"}})

        async def create_status(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            status = {"id": self.next_id(), "sha": request.path_params["sha"], "state": body["state"],
                      "context": body.get("context", "default"), "description": body.get("description"),
                      "target_url": body.get("target_url")}
            r.statuses.append(status)
            return _json({**status, "url": self.api(f"/repos/{r.full_name}/statuses/{status['sha']}")}, 201)

        async def create_hook(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            if any(h["config"]["url"] == body["config"]["url"] for h in r.hooks.values()):
                return _json({"message": "Validation Failed", "errors": [
                    {"resource": "Hook", "code": "custom", "message": "Hook already exists on this repository"}]}, 422)
            h = {"id": str(self.next_id()), "config": body["config"], "events": body.get("events", ["push"]),
                 "active": body.get("active", True)}
            r.hooks[h["id"]] = h
            return _json(self.hook_json(r, h), 201)

        async def hook(request: Request, r: FakeRepo) -> Response:
            h = r.hooks.get(request.path_params["id"])
            if h is None:
                return self.error(404, "Not Found")
            if request.method == "DELETE":
                del r.hooks[h["id"]]
                return Response(status_code=204)
            if request.method == "PATCH":
                body = await request.json()
                h["config"] = body.get("config", h["config"])
                h["events"] = body.get("events", h["events"])
                h["active"] = body.get("active", h["active"])
            return _json(self.hook_json(r, h))

        repo = "/repos/{owner}/{name}"
        return [
            self.route("/user", user, ["GET"]),
            self.route("/user/repos", user_repos, ["GET"]),
            self.route(repo + "/branches", branches, ["GET"]),
            self.route(repo + "/commits", commits, ["GET"]),
            self.route(repo + "/commits/{sha}", commit, ["GET"]),
            self.route(repo + "/pulls", pulls, ["GET"]),
            self.route(repo + "/pulls", create_pull, ["POST"]),
            self.route(repo + "/issues", issues, ["GET"]),
            self.route(repo + "/issues/comments/{id}", edit_issue_comment, ["PATCH"]),
            self.route(repo + "/issues/{number}/comments", issue_comments, ["GET"]),
            self.route(repo + "/issues/{number}/comments", create_issue_comment, ["POST"]),
            self.route(repo + "/git/refs", create_ref, ["POST"]),
            self.route(repo + "/git/ref/{ref:path}", get_ref, ["GET"]),
            self.route(repo + "/git/refs/{ref:path}", get_ref, ["GET"]),
            self.route(repo + "/statuses/{sha}", create_status, ["POST"]),
            self.route(repo + "/hooks", create_hook, ["POST"]),
            self.route(repo + "/hooks/{id}", hook, ["GET", "PATCH", "DELETE"]),
        ]


# ======================================================================================= GitLab
class FakeGitLab(FakeProviderServer):
    """GitLab API v4; projects addressed by numeric id or URL-encoded full path."""

    prefix = "/api/v4"
    token_scopes = ["api", "read_user"]

    # --- OAuth (GitLab: /oauth/authorize and /oauth/token; OAuth tokens only as Bearer) ----------
    oauth_paths = ("/oauth/authorize", "/oauth/token")
    oauth_default_scope = "api read_user"

    def oauth_token_json(self, access: str, refresh: str, scope: str) -> dict[str, Any]:
        return {**super().oauth_token_json(access, refresh, scope), "token_type": "Bearer",
                "created_at": int(time.time())}

    def token_accepted(self, request: Request) -> bool:
        # Personal access tokens in PRIVATE-TOKEN or as Bearer; OAuth tokens only as Bearer (GitLab
        # looks a PRIVATE-TOKEN up among personal access tokens alone).
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        bearer = value if scheme.lower() == "bearer" else None
        return (request.headers.get("private-token") == TOKEN or bearer == TOKEN
                or (bearer is not None and bearer in self.oauth_access_tokens))

    def token_of(self, request: Request) -> str | None:
        return request.headers.get("private-token")

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return _json({"message": f"{status} {message}"}, status, headers)

    def rate_limit_response(self) -> Response:
        return _json({"message": "Retry later"}, 429, {
            "Retry-After": str(RETRY_AFTER), "RateLimit-Limit": "600", "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(int(time.time()) + RETRY_AFTER)})

    def web(self, r: FakeRepo, path: str = "") -> str:
        return f"{self.origin}/{r.full_name}{path}"

    def project_json(self, r: FakeRepo) -> dict[str, Any]:
        data = {
            "id": r.id, "path_with_namespace": r.full_name, "name": r.full_name.split("/")[1],
            "default_branch": r.default_branch, "topics": r.topics, "tag_list": r.topics,
            "visibility": "private" if r.private else "public", "archived": r.archived,
            "http_url_to_repo": f"{self.origin}/{r.full_name}.git",
            "ssh_url_to_repo": f"git@127.0.0.1:{r.full_name}.git", "web_url": self.web(r),
        }
        if r.fork:
            # Only present on forks.
            data["forked_from_project"] = {"id": 1, "path_with_namespace": "upstream/legacy"}
        return data

    def mr_json(self, r: FakeRepo, p: dict[str, Any]) -> dict[str, Any]:
        state = "merged" if p["merged"] else ("opened" if p["state"] == "open" else "closed")
        return {"id": 2000 + p["number"], "iid": p["number"], "project_id": r.id, "title": p["title"],
                "description": p["body"], "state": state, "source_branch": p["head"],
                "target_branch": p["base"], "web_url": self.web(r, f"/-/merge_requests/{p['number']}")}

    def note_json(self, c: dict[str, Any]) -> dict[str, Any]:
        return {"id": c["id"], "body": c["body"], "author": {"username": "root"}, "system": False,
                "noteable_type": "MergeRequest", "noteable_iid": c["number"]}

    def hook_json(self, r: FakeRepo, h: dict[str, Any]) -> dict[str, Any]:
        # GitLab never returns the token.
        return {"id": int(h["id"]), "project_id": r.id, **{k: v for k, v in h.items() if k not in ("id", "token")}}

    def branch_json(self, r: FakeRepo, name: str) -> dict[str, Any]:
        return {"name": name, "commit": {"id": r.branches[name], "short_id": r.branches[name][:8]},
                "protected": name == r.default_branch, "default": name == r.default_branch,
                "web_url": self.web(r, f"/-/tree/{name}")}

    def routes(self) -> list[Route]:
        def user(request: Request) -> Response:
            return _json({"id": 1, "username": "root", "name": "Administrator", "state": "active"})

        def token_self(request: Request) -> Response:
            return _json({"id": 7, "name": "ci", "revoked": False, "active": True, "user_id": 1,
                          "scopes": self.token_scopes, "expires_at": None})

        def projects(request: Request) -> Response:
            return _json([self.project_json(r) for r in self.repos.values()])

        def languages(request: Request, r: FakeRepo) -> Response:
            return _json({r.language: 87.5, "Shell": 12.5} if r.language else {})

        def branches(request: Request, r: FakeRepo) -> Response:
            return _json([self.branch_json(r, n) for n in r.branches])

        def branch(request: Request, r: FakeRepo) -> Response:
            if request.path_params["branch"] not in r.branches:
                return self.error(404, "Branch Not Found")
            return _json(self.branch_json(r, request.path_params["branch"]))

        async def create_branch(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            if body["branch"] in r.branches:
                return _json({"message": "Branch already exists"}, 400)
            r.branches[body["branch"]] = body["ref"]
            return _json(self.branch_json(r, body["branch"]), 201)

        def commits(request: Request, r: FakeRepo) -> Response:
            ref = request.query_params.get("ref_name", r.default_branch)
            per_page = int(request.query_params.get("per_page", 20))
            if ref not in r.commits:
                return self.error(404, "Not Found")
            return _json([{"id": c["sha"], "short_id": c["sha"][:8], "title": c["message"],
                           "message": c["message"], "author_name": c["author"], "authored_date": c["date"],
                           "web_url": self.web(r, f"/-/commit/{c['sha']}")} for c in r.commits[ref][:per_page]])

        def commit(request: Request, r: FakeRepo) -> Response:
            c = self.find_commit(r, request.path_params["sha"])
            if c is None:
                return self.error(404, "404 Commit Not Found")
            return _json({"id": c["sha"], "short_id": c["sha"][:8], "title": c["message"], "message": c["message"],
                          "author_name": c["author"], "authored_date": c["date"],
                          "web_url": self.web(r, f"/-/commit/{c['sha']}")})

        def merge_requests(request: Request, r: FakeRepo) -> Response:
            state = request.query_params.get("state", "all")
            items = [self.mr_json(r, p) for p in r.pulls]
            return _json([m for m in items if state in ("all", m["state"])])

        async def create_mr(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            for p in r.pulls:
                if p["head"] == body["source_branch"] and p["base"] == body["target_branch"] and p["state"] == "open":
                    return _json({"message": [f"Another open merge request already exists for this source "
                                              f"branch: !{p['number']}"]}, 409)
            p = {"number": self.next_id(), "title": body["title"], "state": "open", "merged": False,
                 "head": body["source_branch"], "base": body["target_branch"], "body": body.get("description", "")}
            r.pulls.append(p)
            return _json(self.mr_json(r, p), 201)

        def merge_request(request: Request, r: FakeRepo) -> Response:
            iid = int(request.path_params["iid"])
            p = next((p for p in r.pulls if p["number"] == iid), None)
            return _json(self.mr_json(r, p)) if p else self.error(404, "Not found")

        def notes(request: Request, r: FakeRepo) -> Response:
            return _json([self.note_json(c) for c in r.comments.get(int(request.path_params["iid"]), [])])

        async def create_note(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["iid"])
            c = {"id": self.next_id(), "number": n, "body": (await request.json())["body"]}
            r.comments.setdefault(n, []).append(c)
            return _json(self.note_json(c), 201)

        async def update_note(request: Request, r: FakeRepo) -> Response:
            n, nid = int(request.path_params["iid"]), int(request.path_params["id"])
            for c in r.comments.get(n, []):
                if c["id"] == nid:
                    c["body"] = (await request.json())["body"]
                    return _json(self.note_json(c))
            return self.error(404, "Not found")

        def issues(request: Request, r: FakeRepo) -> Response:
            state = request.query_params.get("state", "all")
            items = [{"id": 3000 + i["number"], "iid": i["number"], "title": i["title"],
                      "state": "opened" if i["state"] == "open" else "closed",
                      "web_url": self.web(r, f"/-/issues/{i['number']}")} for i in r.issues]
            return _json([i for i in items if state in ("all", i["state"])])

        async def create_status(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            status = {"id": self.next_id(), "sha": request.path_params["sha"], "status": body["state"],
                      "name": body.get("name") or body.get("context") or "default",
                      "description": body.get("description"), "target_url": body.get("target_url")}
            r.statuses.append(status)
            return _json(status, 201)

        async def create_hook(request: Request, r: FakeRepo) -> Response:
            h = {"id": str(self.next_id()), **(await request.json())}
            r.hooks[h["id"]] = h
            return _json(self.hook_json(r, h), 201)

        async def hook(request: Request, r: FakeRepo) -> Response:
            h = r.hooks.get(request.path_params["id"])
            if h is None:
                return self.error(404, "Not found")
            if request.method == "DELETE":
                del r.hooks[h["id"]]
                return Response(status_code=204)
            if request.method == "PUT":
                h.update(await request.json())
            return _json(self.hook_json(r, h))

        project = "/projects/{project:path}"
        return [
            self.route("/user", user, ["GET"]),
            self.route("/personal_access_tokens/self", token_self, ["GET"]),
            self.route("/projects", projects, ["GET"]),
            self.route(project + "/languages", languages, ["GET"]),
            self.route(project + "/repository/branches", branches, ["GET"]),
            self.route(project + "/repository/branches", create_branch, ["POST"]),
            self.route(project + "/repository/branches/{branch}", branch, ["GET"]),
            self.route(project + "/repository/commits", commits, ["GET"]),
            self.route(project + "/repository/commits/{sha}", commit, ["GET"]),
            self.route(project + "/merge_requests", merge_requests, ["GET"]),
            self.route(project + "/merge_requests", create_mr, ["POST"]),
            self.route(project + "/merge_requests/{iid:int}", merge_request, ["GET"]),
            self.route(project + "/merge_requests/{iid:int}/notes", notes, ["GET"]),
            self.route(project + "/merge_requests/{iid:int}/notes", create_note, ["POST"]),
            self.route(project + "/merge_requests/{iid:int}/notes/{id:int}", update_note, ["PUT"]),
            self.route(project + "/issues", issues, ["GET"]),
            self.route(project + "/statuses/{sha}", create_status, ["POST"]),
            self.route(project + "/hooks", create_hook, ["POST"]),
            self.route(project + "/hooks/{id}", hook, ["GET", "PUT", "DELETE"]),
        ]


# ======================================================================================== Gitea
class FakeGitea(FakeProviderServer):
    """Gitea API v1 (swagger shapes), paginated by ``page`` / ``limit``."""

    prefix = "/api/v1"

    # --- OAuth (Gitea: /login/oauth/...; a wrong client secret is 400 unauthorized_client) -------
    oauth_expires_in = 3600
    oauth_default_scope = "read:repository write:repository read:user"
    oauth_bad_client = ("unauthorized_client", 400)

    def page(self, request: Request, items: list[Any]) -> Response:
        page = int(request.query_params.get("page", 1))
        limit = int(request.query_params.get("limit", 30))
        chunk = items[(page - 1) * limit: page * limit]
        return _json(chunk, headers={"X-Total-Count": str(len(items))})

    def web(self, r: FakeRepo, path: str = "") -> str:
        return f"{self.origin}/{r.full_name}{path}"

    def repo_json(self, r: FakeRepo) -> dict[str, Any]:
        owner, name = r.full_name.split("/")
        return {"id": r.id, "owner": {"login": owner}, "name": name, "full_name": r.full_name,
                "private": r.private, "fork": r.fork, "archived": r.archived, "mirror": False,
                "default_branch": r.default_branch, "language": r.language or "", "topics": r.topics,
                "html_url": self.web(r), "clone_url": f"{self.origin}/{r.full_name}.git",
                "ssh_url": f"git@127.0.0.1:{r.full_name}.git"}

    def pull_json(self, r: FakeRepo, p: dict[str, Any]) -> dict[str, Any]:
        return {"id": 1000 + p["number"], "number": p["number"], "title": p["title"], "body": p["body"],
                "state": p["state"], "merged": p["merged"], "html_url": self.web(r, f"/pulls/{p['number']}"),
                "head": {"ref": p["head"], "sha": r.branches.get(p["head"], "")},
                "base": {"ref": p["base"], "sha": r.branches.get(p["base"], "")}}

    def comment_json(self, r: FakeRepo, c: dict[str, Any]) -> dict[str, Any]:
        return {"id": c["id"], "body": c["body"], "user": {"login": "gitea_admin"},
                "html_url": self.web(r, f"/issues/{c['number']}#issuecomment-{c['id']}"),
                "issue_url": self.web(r, f"/issues/{c['number']}")}

    def branch_json(self, r: FakeRepo, name: str) -> dict[str, Any]:
        return {"name": name, "commit": {"id": r.branches[name], "message": ""},
                "protected": name == r.default_branch}

    def hook_json(self, h: dict[str, Any]) -> dict[str, Any]:
        # Gitea answers only the url and content_type of the config, never the secret.
        return {"id": int(h["id"]), "type": h["type"], "active": h["active"], "events": h["events"],
                "config": {"url": h["config"]["url"], "content_type": h["config"].get("content_type", "json")}}

    def routes(self) -> list[Route]:
        def user(request: Request) -> Response:
            return _json({"id": 1, "login": "gitea_admin", "full_name": "Gitea Admin", "email": "a@example.com"})

        def user_repos(request: Request) -> Response:
            return self.page(request, [self.repo_json(r) for r in self.repos.values()])

        def branches(request: Request, r: FakeRepo) -> Response:
            return self.page(request, [self.branch_json(r, n) for n in r.branches])

        async def create_branch(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            name = body["new_branch_name"]
            if name in r.branches:
                return self.error(409, "The branch already exists.")
            r.branches[name] = body.get("old_ref_name") or r.branches[body.get("old_branch_name", r.default_branch)]
            return _json(self.branch_json(r, name), 201)

        def commits(request: Request, r: FakeRepo) -> Response:
            branch = request.query_params.get("sha", r.default_branch)
            if branch not in r.commits:
                return self.error(404, "The target couldn't be found.")
            return self.page(request, [
                {"sha": c["sha"], "html_url": self.web(r, f"/commit/{c['sha']}"),
                 "commit": {"message": c["message"],
                            "author": {"name": c["author"], "email": "a@example.com", "date": c["date"]}}}
                for c in r.commits[branch]])

        def commit(request: Request, r: FakeRepo) -> Response:
            c = self.find_commit(r, request.path_params["sha"])
            if c is None:
                return self.error(404, "The target couldn't be found.")
            return _json({"sha": c["sha"], "html_url": self.web(r, f"/commit/{c['sha']}"),
                          "commit": {"message": c["message"],
                                     "author": {"name": c["author"], "email": "a@example.com", "date": c["date"]}}})

        def pulls(request: Request, r: FakeRepo) -> Response:
            state = request.query_params.get("state", "open")
            return self.page(request, [self.pull_json(r, p) for p in r.pulls if state in ("all", p["state"])])

        async def create_pull(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            if any(p["head"] == body["head"] and p["base"] == body["base"] and p["state"] == "open"
                   for p in r.pulls):
                return self.error(409, "pull request already exists for these targets")
            p = {"number": self.next_id(), "title": body["title"], "state": "open", "merged": False,
                 "head": body["head"], "base": body["base"], "body": body.get("body", "")}
            r.pulls.append(p)
            return _json(self.pull_json(r, p), 201)

        def issues(request: Request, r: FakeRepo) -> Response:
            state = request.query_params.get("state", "open")
            return self.page(request, [
                {"id": 3000 + i["number"], "number": i["number"], "title": i["title"], "state": i["state"],
                 "html_url": self.web(r, f"/issues/{i['number']}"), "pull_request": None}
                for i in r.issues if state in ("all", i["state"])])

        def comments(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["number"])
            return self.page(request, [self.comment_json(r, c) for c in r.comments.get(n, [])])

        async def create_comment(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["number"])
            c = {"id": self.next_id(), "number": n, "body": (await request.json())["body"]}
            r.comments.setdefault(n, []).append(c)
            return _json(self.comment_json(r, c), 201)

        async def edit_comment(request: Request, r: FakeRepo) -> Response:
            cid = int(request.path_params["id"])
            for c in itertools.chain.from_iterable(r.comments.values()):
                if c["id"] == cid:
                    c["body"] = (await request.json())["body"]
                    return _json(self.comment_json(r, c))
            return self.error(404, "The target couldn't be found.")

        async def create_status(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            status = {"id": self.next_id(), "sha": request.path_params["sha"], "status": body["state"],
                      "context": body.get("context"), "description": body.get("description"),
                      "target_url": body.get("target_url")}
            r.statuses.append(status)
            return _json(status, 201)

        async def create_hook(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            h = {"id": str(self.next_id()), "type": body["type"], "config": body["config"],
                 "events": body.get("events", ["push"]), "active": body.get("active", False)}
            r.hooks[h["id"]] = h
            return _json(self.hook_json(h), 201)

        async def hook(request: Request, r: FakeRepo) -> Response:
            h = r.hooks.get(request.path_params["id"])
            if h is None:
                return self.error(404, "The target couldn't be found.")
            if request.method == "DELETE":
                del r.hooks[h["id"]]
                return Response(status_code=204)
            if request.method == "PATCH":
                body = await request.json()
                h["config"] = {**h["config"], **body.get("config", {})}
                h["events"] = body.get("events", h["events"])
                h["active"] = body.get("active", h["active"])
            return _json(self.hook_json(h))

        repo = "/repos/{owner}/{name}"
        return [
            self.route("/user", user, ["GET"]),
            self.route("/user/repos", user_repos, ["GET"]),
            self.route(repo + "/branches", branches, ["GET"]),
            self.route(repo + "/branches", create_branch, ["POST"]),
            self.route(repo + "/commits", commits, ["GET"]),
            self.route(repo + "/git/commits/{sha}", commit, ["GET"]),
            self.route(repo + "/pulls", pulls, ["GET"]),
            self.route(repo + "/pulls", create_pull, ["POST"]),
            self.route(repo + "/issues", issues, ["GET"]),
            self.route(repo + "/issues/comments/{id:int}", edit_comment, ["PATCH"]),
            self.route(repo + "/issues/{number:int}/comments", comments, ["GET"]),
            self.route(repo + "/issues/{number:int}/comments", create_comment, ["POST"]),
            self.route(repo + "/statuses/{sha}", create_status, ["POST"]),
            self.route(repo + "/hooks", create_hook, ["POST"]),
            self.route(repo + "/hooks/{id}", hook, ["GET", "PATCH", "DELETE"]),
        ]


# ==================================================================================== Bitbucket
class FakeBitbucket(FakeProviderServer):
    """Bitbucket Cloud REST 2.0: ``{values, pagelen, page, next}`` envelopes, ``{type: error}`` errors."""

    prefix = "/2.0"
    scopes = "repository:write, pullrequest:write, webhook, account"

    # --- OAuth (Bitbucket: /site/oauth2/...; the consumer authenticates with HTTP Basic) ---------
    oauth_paths = ("/site/oauth2/authorize", "/site/oauth2/access_token")
    oauth_default_scope = "repository account"

    def oauth_client(self, request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None, None
        return client_id, secret

    def oauth_token_json(self, access: str, refresh: str, scope: str) -> dict[str, Any]:
        return {"access_token": access, "scopes": scope, "expires_in": self.oauth_expires_in,
                "refresh_token": refresh, "token_type": "bearer", "state": "authorization_code"}

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return _json({"type": "error", "error": {"message": message}}, status, headers)

    def rate_limit_response(self) -> Response:
        return self.error(429, "Rate limit for this resource has been exceeded", {"Retry-After": str(RETRY_AFTER)})

    def paged(self, request: Request, items: list[Any]) -> Response:
        pagelen = int(request.query_params.get("pagelen", 10))
        page = int(request.query_params.get("page", 1))
        data: dict[str, Any] = {"pagelen": pagelen, "page": page, "size": len(items),
                                "values": items[(page - 1) * pagelen: page * pagelen]}
        if page * pagelen < len(items):
            data["next"] = str(request.url.include_query_params(page=page + 1))
        return _json(data)

    def web(self, r: FakeRepo, path: str = "") -> str:
        return f"{self.origin}/{r.full_name}{path}"

    def link(self, href: str) -> dict[str, str]:
        return {"href": href}

    def repo_json(self, r: FakeRepo) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "repository", "uuid": f"{{{r.id}}}", "full_name": r.full_name,
            "name": r.full_name.split("/")[1], "is_private": r.private, "language": (r.language or "").lower(),
            "mainbranch": {"type": "branch", "name": r.default_branch}, "scm": "git",
            "links": {"html": self.link(self.web(r)),
                      "clone": [{"name": "https", "href": f"{self.origin}/{r.full_name}.git"},
                                {"name": "ssh", "href": f"git@127.0.0.1:{r.full_name}.git"}]},
        }
        if r.fork:
            data["parent"] = {"type": "repository", "full_name": "upstream/legacy"}
        return data

    def pull_json(self, r: FakeRepo, p: dict[str, Any]) -> dict[str, Any]:
        state = "MERGED" if p["merged"] else ("OPEN" if p["state"] == "open" else "DECLINED")
        return {"type": "pullrequest", "id": p["number"], "title": p["title"], "description": p["body"],
                "state": state, "links": {"html": self.link(self.web(r, f"/pull-requests/{p['number']}"))},
                "source": {"branch": {"name": p["head"]}, "commit": {"hash": r.branches.get(p["head"], "")[:12]}},
                "destination": {"branch": {"name": p["base"]}}, "author": {"display_name": "Ada"}}

    def comment_json(self, r: FakeRepo, c: dict[str, Any]) -> dict[str, Any]:
        return {"type": "pullrequest_comment", "id": c["id"],
                "content": {"raw": c["body"], "markup": "markdown", "html": ""},
                "links": {"html": self.link(self.web(r, f"/pull-requests/{c['number']}#comment-{c['id']}"))}}

    def branch_json(self, r: FakeRepo, name: str) -> dict[str, Any]:
        return {"type": "branch", "name": name, "target": {"type": "commit", "hash": r.branches[name]},
                "links": {"html": self.link(self.web(r, f"/branch/{name}"))}}

    def commit_json(self, r: FakeRepo, c: dict[str, Any]) -> dict[str, Any]:
        return {"type": "commit", "hash": c["sha"], "message": c["message"], "date": c["date"],
                "author": {"raw": f"{c['author']} <a@example.com>", "user": {"display_name": c["author"]}},
                "links": {"html": self.link(self.web(r, f"/commits/{c['sha']}"))}}

    def hook_json(self, h: dict[str, Any]) -> dict[str, Any]:
        return {"type": "webhook_subscription", "uuid": h["uuid"], "url": h["url"],
                "description": h["description"], "active": h["active"], "events": h["events"],
                "secret_set": bool(h.get("secret"))}

    def token_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def routes(self) -> list[Route]:
        def user(request: Request) -> Response:
            return _json({"type": "user", "username": "ada", "display_name": "Ada Lovelace",
                          "account_id": "557058:1", "uuid": "{u-1}"}, headers={"X-OAuth-Scopes": self.scopes})

        def repositories(request: Request) -> Response:
            return self.paged(request, [self.repo_json(r) for r in self.repos.values()])

        def branches(request: Request, r: FakeRepo) -> Response:
            return self.paged(request, [self.branch_json(r, n) for n in r.branches])

        def branch(request: Request, r: FakeRepo) -> Response:
            name = request.path_params["branch"]
            return _json(self.branch_json(r, name)) if name in r.branches else self.error(404, "Branch not found")

        async def create_branch(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            if body["name"] in r.branches:
                return self.error(400, f"BRANCH_ALREADY_EXISTS: Branch \"{body['name']}\" already exists")
            r.branches[body["name"]] = body["target"]["hash"]
            return _json(self.branch_json(r, body["name"]), 201)

        def commits(request: Request, r: FakeRepo) -> Response:
            branch = request.path_params["branch"]
            if branch not in r.commits:
                return self.error(404, f"Commit not found: {branch}")
            return self.paged(request, [self.commit_json(r, c) for c in r.commits[branch]])

        def commit(request: Request, r: FakeRepo) -> Response:
            c = self.find_commit(r, request.path_params["sha"])
            return _json(self.commit_json(r, c)) if c else self.error(404, f"Commit not found: {request.path_params['sha']}")

        def pullrequests(request: Request, r: FakeRepo) -> Response:
            states = request.query_params.getlist("state") or ["OPEN"]
            return self.paged(request, [j for j in (self.pull_json(r, p) for p in r.pulls) if j["state"] in states])

        async def create_pr(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            p = {"number": self.next_id(), "title": body["title"], "state": "open", "merged": False,
                 "head": body["source"]["branch"]["name"], "base": body["destination"]["branch"]["name"],
                 "body": body.get("description", "")}
            r.pulls.append(p)
            return _json(self.pull_json(r, p), 201)

        def issues(request: Request, r: FakeRepo) -> Response:
            # Minimal BBQL: the client sends state="..." OR ..., optionally wrapped in NOT (...).
            q = request.query_params.get("q", "")
            wanted = {part.split('"')[1] for part in q.split("OR") if '"' in part}
            negate = q.startswith("NOT")
            items = [{"type": "issue", "id": i["number"], "title": i["title"],
                      "state": "new" if i["state"] == "open" else "resolved",
                      "links": {"html": self.link(self.web(r, f"/issues/{i['number']}"))}} for i in r.issues]
            if q:
                items = [i for i in items if (i["state"] in wanted) != negate]
            return self.paged(request, items)

        def comments(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["number"])
            return self.paged(request, [self.comment_json(r, c) for c in r.comments.get(n, [])])

        async def create_comment(request: Request, r: FakeRepo) -> Response:
            n = int(request.path_params["number"])
            c = {"id": self.next_id(), "number": n, "body": (await request.json())["content"]["raw"]}
            r.comments.setdefault(n, []).append(c)
            return _json(self.comment_json(r, c), 201)

        async def update_comment(request: Request, r: FakeRepo) -> Response:
            n, cid = int(request.path_params["number"]), int(request.path_params["id"])
            for c in r.comments.get(n, []):
                if c["id"] == cid:
                    c["body"] = (await request.json())["content"]["raw"]
                    return _json(self.comment_json(r, c))
            return self.error(404, "Comment not found")

        async def create_status(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            if not body.get("url"):
                return self.error(400, "url: This field is required.")
            status = {"type": "build", "sha": request.path_params["sha"], "key": body["key"],
                      "state": body["state"], "name": body.get("name"), "description": body.get("description"),
                      "url": body["url"]}
            r.statuses.append(status)
            return _json(status, 201)

        async def create_hook(request: Request, r: FakeRepo) -> Response:
            body = await request.json()
            h = {"uuid": f"{{hook-{self.next_id()}}}", **body}
            r.hooks[h["uuid"]] = h
            return _json(self.hook_json(h), 201)

        async def hook(request: Request, r: FakeRepo) -> Response:
            h = r.hooks.get(request.path_params["uid"])
            if h is None:
                return self.error(404, "Webhook not found")
            if request.method == "DELETE":
                del r.hooks[h["uuid"]]
                return Response(status_code=204)
            if request.method == "PUT":
                h.update(await request.json())
            return _json(self.hook_json(h))

        repo = "/repositories/{owner}/{name}"
        return [
            self.route("/user", user, ["GET"]),
            self.route("/repositories", repositories, ["GET"]),
            self.route(repo + "/refs/branches", branches, ["GET"]),
            self.route(repo + "/refs/branches", create_branch, ["POST"]),
            self.route(repo + "/refs/branches/{branch}", branch, ["GET"]),
            self.route(repo + "/commits/{branch}", commits, ["GET"]),
            self.route(repo + "/commit/{sha}", commit, ["GET"]),
            self.route(repo + "/commit/{sha}/statuses/build", create_status, ["POST"]),
            self.route(repo + "/pullrequests", pullrequests, ["GET"]),
            self.route(repo + "/pullrequests", create_pr, ["POST"]),
            self.route(repo + "/pullrequests/{number:int}/comments", comments, ["GET"]),
            self.route(repo + "/pullrequests/{number:int}/comments", create_comment, ["POST"]),
            self.route(repo + "/pullrequests/{number:int}/comments/{id:int}", update_comment, ["PUT"]),
            self.route(repo + "/issues", issues, ["GET"]),
            self.route(repo + "/hooks", create_hook, ["POST"]),
            self.route(repo + "/hooks/{uid}", hook, ["GET", "PUT", "DELETE"]),
        ]


FAKES: dict[str, type[FakeProviderServer]] = {
    "github": FakeGitHub,
    "gitlab": FakeGitLab,
    "gitea": FakeGitea,
    "bitbucket": FakeBitbucket,
}
