"""A callback receiver on 127.0.0.1: records every delivery, checks its signature with
hmac.compare_digest, and answers the scripted status codes in turn (then 200)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, key: bytes, codes: list[int] | None = None) -> None:
        self.key = key
        self.codes = list(codes or [])
        self.deliveries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                expected = "sha256=" + hmac.new(receiver.key, body, hashlib.sha256).hexdigest()
                signature = self.headers.get("X-Devops-Signature-256") or ""
                with receiver._lock:
                    code = receiver.codes.pop(0) if receiver.codes else 200
                    receiver.deliveries.append({
                        "body": json.loads(body), "headers": dict(self.headers), "code": code,
                        "signature_ok": hmac.compare_digest(expected, signature)})
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
