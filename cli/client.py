"""A small HTTP client of the API, and the errors the commands turn into exit codes.

Exceptions::

    CliError            a message for the user; ``exit_code`` says how the command ends
    ├── ApiError        the API answered 4xx/5xx: its ``detail`` in one line (exit 1)
    └── ApiUnreachable  no answer: refused, DNS, TLS or timeout (exit 2)
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from cli.config import Config

USER_AGENT = "devops-cli"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class CliError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(CliError):
    """An error answer: ``status`` and the API's message."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ApiUnreachable(CliError):
    exit_code = 2


def _location(loc: Any) -> str:
    parts = [str(p) for p in loc] if isinstance(loc, list | tuple) else [str(loc)]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def error_message(status: int, body: Any, reason: str) -> str:
    """One line from an error answer: ``detail`` as is, or each ``loc: msg`` of a 422 list."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        problems = [f"{_location(item.get('loc', []))}: {item.get('msg', '')}" if isinstance(item, dict) else str(item)
                    for item in detail]
        text = "; ".join(problems)
    elif detail is not None:
        text = detail if isinstance(detail, str) else json.dumps(detail)
    else:
        text = reason or "error"
    return f"{text} (HTTP {status})"


def transport_problem(exc: httpx.TransportError) -> str:
    """What went wrong, from the OS error under httpx's (by type, not by message)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "not an http:// or https:// URL"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None


class ApiClient:
    """Requests to ``<api_url>/api/v1/devops`` with the bearer token."""

    def __init__(self, config: Config, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        headers = {"User-Agent": USER_AGENT}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._http = httpx.Client(base_url=config.base_url, headers=headers, timeout=TIMEOUT, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: httpx.TransportError) -> ApiUnreachable:
        return ApiUnreachable(f"cannot reach the API at {self.config.api_url} ({transport_problem(exc)}); is it "
                              "running? Set --api-url or DEVOPS_API_URL, or run `devops login`")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer, or ApiError for a 4xx/5xx, or ApiUnreachable."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.is_error:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:  # not the API's JSON: a proxy, or another server at that URL
            return ApiError(response.status_code, f"{response.reason_phrase} (HTTP {response.status_code} from "
                            f"{response.request.url}: is {self.config.api_url} the devops API?)")
        return ApiError(response.status_code, error_message(response.status_code, body, response.reason_phrase), body)

    def json_of(self, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{response.request.url} answered something that is not JSON: is "
                           f"{self.config.api_url} the devops API?") from None

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.json_of(self.request("GET", path, params=clean))

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.json_of(self.request("POST", path, json=body, params=clean))

    def patch(self, path: str, body: Any) -> Any:
        return self.json_of(self.request("PATCH", path, json=body))

    def stream_events(self, path: str, last_event_id: str | None = None) -> Iterator[SseEvent]:
        """Server-Sent Events of ``path`` from ``last_event_id`` (comments skipped). Ends when the
        server closes the stream; a dropped connection raises ApiUnreachable."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(None, connect=10.0, read=120.0)  # the server sends keep-alives
        try:
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise self._error(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """SSE messages from the stream's lines (the subset the API sends: id, event, data)."""
    event, data, event_id = "message", [], None
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
