"""A fake model API on 127.0.0.1 speaking the documented shapes: the Anthropic Messages API
(``POST /v1/messages``, JSON or server-sent events, tool use, error bodies) and OpenAI Chat
Completions (``POST /v1/chat/completions``). It records every request so tests can assert what
was sent. Scripted failures (``fail_next``) answer before the normal reply."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-ant-test-key-0123456789"
UNKNOWN_MODEL = "claude-does-not-exist"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeModelApi:
    reply_text: str | None = None  # None: "echo: <the prompt>"
    usage: tuple[int, int] = (12, 30)
    requests: list[Recorded] = field(default_factory=list)
    failures: list[tuple[int, str, str, dict[str, str]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.failures.append((status, kind, message, headers or {}))

    def start(self) -> FakeModelApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body in one segment: no Nagle/delayed-ACK pause between them
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
                self._send(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path == "/v1/messages":
                    self._messages(body)
                elif self.path == "/v1/chat/completions":
                    self._chat(body)
                else:
                    self._error(404, "not_found_error", f"no route {self.path}")

            def _messages(self, body: dict[str, Any]) -> None:
                # x-api-key, or the Bearer form the installed SDK (2.17) sends
                if API_KEY not in (self.headers.get("x-api-key"), self.headers.get("Authorization", "")[7:]):
                    return self._error(401, "authentication_error", "invalid x-api-key")
                if not self.headers.get("anthropic-version"):
                    return self._error(400, "invalid_request_error", "anthropic-version header is required")
                if fake.failures:
                    status, kind, message, headers = fake.failures.pop(0)
                    return self._error(status, kind, message, headers)
                if body.get("model") == UNKNOWN_MODEL:
                    return self._error(404, "not_found_error", f"model: {body['model']}")
                prompt = body["messages"][0]["content"]
                text = fake.reply_text if fake.reply_text is not None else f"echo: {prompt}"
                content: list[dict[str, Any]] = [{"type": "text", "text": text}]
                stop = "end_turn"
                if body.get("tools"):
                    tool = body["tools"][0]
                    content.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}", "name": tool["name"],
                                    "input": {"path": "README.md"}})
                    stop = "tool_use"
                message = {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                           "content": content, "model": body["model"], "stop_reason": stop, "stop_sequence": None,
                           "usage": {"input_tokens": fake.usage[0], "output_tokens": fake.usage[1]}}
                if body.get("stream"):
                    return self._stream(message)
                return self._send(200, message)

            def _stream(self, message: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()

                def event(name: str, data: dict[str, Any]) -> None:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())
                    self.wfile.flush()

                start = {**message, "content": [], "stop_reason": None,
                         "usage": {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}}
                event("message_start", {"message": start})
                for index, block in enumerate(message["content"]):
                    if block["type"] == "text":
                        event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                        text = block["text"]
                        for piece in (text[:len(text) // 2], text[len(text) // 2:]):
                            event("content_block_delta", {"index": index,
                                                          "delta": {"type": "text_delta", "text": piece}})
                    else:
                        event("content_block_start", {"index": index, "content_block": {
                            "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
                        event("content_block_delta", {"index": index, "delta": {
                            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
                    event("content_block_stop", {"index": index})
                event("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                        "usage": {"output_tokens": message["usage"]["output_tokens"]}})
                event("message_stop", {})
                self.close_connection = True

            def _chat(self, body: dict[str, Any]) -> None:
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                if fake.failures:
                    status, kind, message, headers = fake.failures.pop(0)
                    return self._send(status, {"error": {"message": message, "type": kind}}, headers)
                prompt = body["messages"][-1]["content"]
                text = fake.reply_text if fake.reply_text is not None else f"echo: {prompt}"
                self._send(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": fake.usage[0], "completion_tokens": fake.usage[1],
                              "total_tokens": sum(fake.usage)}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="fake-model-api", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/messages"]
