"""A fake GitHub Actions REST API on 127.0.0.1 (``ThreadingHTTPServer`` in a thread) speaking the
documented shapes: ``POST .../actions/workflows/{workflow}/dispatches`` (204), ``GET
.../actions/workflows/{workflow}/runs`` and ``GET .../actions/runs/{id}``. Each dispatch creates a
run whose status moves queued → in_progress → completed over successive GETs of the run, ending
with ``conclusion`` (set per test). A wrong bearer token or an unknown workflow answers GitHub's
error JSON ``{"message", "documentation_url"}``."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DOCS = "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event"


class FakeGithubActions:
    def __init__(self, token: str, workflows: tuple[str, ...] = ("deploy.yml",), conclusion: str = "success",
                 steps_to_complete: int = 3) -> None:
        self.token = token
        self.workflows = set(workflows)
        self.conclusion = conclusion
        self.steps_to_complete = steps_to_complete
        self.dispatches: list[dict[str, Any]] = []
        self.runs: dict[int, dict[str, Any]] = {}
        self.run_gets: dict[int, int] = {}
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        if body is not None:
            handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        auth = handler.headers.get("Authorization", "")
        self.auth_headers.append(auth)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if auth != f"Bearer {self.token}" or handler.headers.get("X-GitHub-Api-Version") != "2022-11-28":
            return self._answer(handler, 401, {"message": "Bad credentials", "documentation_url":
                                               "https://docs.github.com/rest"})
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        workflow = re.fullmatch(r"/repos/([^/]+)/([^/]+)/actions/workflows/([^/]+)/(dispatches|runs)", parts.path)
        if workflow:
            owner, repo, name, what = workflow.groups()
            if name not in self.workflows:
                return self._answer(handler, 404, {"message": "Not Found", "documentation_url": DOCS})
            if what == "dispatches" and method == "POST":
                body = json.loads(raw or b"{}")
                if not isinstance(body.get("inputs", {}), dict) or not all(
                        isinstance(v, str) for v in body.get("inputs", {}).values()):
                    return self._answer(handler, 422, {"message": "inputs must be strings", "documentation_url": DOCS})
                with self._lock:
                    run_id = 1000 + len(self.runs) + 1
                    self.dispatches.append({"owner": owner, "repo": repo, "workflow": name, **body})
                    self.runs[run_id] = {
                        "id": run_id, "run_number": len(self.runs) + 1, "event": "workflow_dispatch",
                        "head_branch": body.get("ref"), "status": "queued", "conclusion": None,
                        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "html_url": f"https://github.com/{owner}/{repo}/actions/runs/{run_id}", "workflow": name}
                    self.run_gets[run_id] = 0
                return self._answer(handler, 204)
            if what == "runs" and method == "GET":
                runs = [r for r in self.runs.values() if r["workflow"] == name
                        and r["head_branch"] == query.get("branch", r["head_branch"])
                        and query.get("event", "workflow_dispatch") == r["event"]]
                runs.sort(key=lambda r: r["id"], reverse=True)  # newest first, as GitHub lists them
                return self._answer(handler, 200, {"total_count": len(runs), "workflow_runs": runs})
        run = re.fullmatch(r"/repos/([^/]+)/([^/]+)/actions/runs/(\d+)", parts.path)
        if run and method == "GET" and int(run.group(3)) in self.runs:
            run_id = int(run.group(3))
            with self._lock:
                self.run_gets[run_id] += 1
                gets = self.run_gets[run_id]
                entry = self.runs[run_id]
                if gets >= self.steps_to_complete:
                    entry["status"], entry["conclusion"] = "completed", self.conclusion
                elif gets >= 2:
                    entry["status"] = "in_progress"
            return self._answer(handler, 200, {k: v for k, v in entry.items() if k != "workflow"})
        return self._answer(handler, 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
