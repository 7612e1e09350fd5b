"""A receiving HTTP server on 127.0.0.1 for the webhook and rest_api executors' tests: it records
every request (method, path, query, headers, body) and answers from a script of responses (the
last one repeats)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers) or [Answer()]
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with receiver._lock:
                    receiver.requests.append(Received(self.command, parts.path, parse_qs(parts.query),
                                                      {k.lower(): v for k, v in self.headers.items()}, body))
                    index = min(len(receiver.requests), len(receiver.answers)) - 1
                    answer = receiver.answers[index]
                payload = answer.body if isinstance(answer.body, bytes) else (
                    answer.body.encode() if isinstance(answer.body, str) else json.dumps(answer.body).encode())
                self.send_response(answer.status)
                content_type = "application/json" if not isinstance(answer.body, str | bytes) else "text/plain"
                self.send_header("Content-Type", content_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/hook"
