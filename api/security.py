"""Auth hygiene for every request: the ``?access_token=`` query value moved out of sight,
a failed-authentication rate limit per client address, security headers, and the API docs
served with a Content-Security-Policy that lets them work (or not served at all).

Why each part:

* Browsers' ``EventSource`` cannot send headers, so the SSE routes take the API token as
  ``?access_token=``. Query strings end up in access logs, proxies' logs, ``request.url`` in
  tracebacks and ``Referer`` headers. The outermost middleware therefore rewrites the value to
  ``***`` in the request itself (uvicorn's access log prints the scope's query string) and keeps
  the real value under :data:`ACCESS_TOKEN_SCOPE_KEY`, which only the SSE routes read
  (:func:`query_access_token`); everywhere else a query token authenticates nothing. A filter on
  the ``uvicorn.access`` logger redacts whatever still slips through (e.g. ``access%5Ftoken``).
* Bearer tokens are 256-bit random values, but an unthrottled API still lets a scanner hammer
  it: :class:`AuthFailureLimiter` answers 429 to an address after ``auth_failure_limit``
  failures within ``auth_failure_window_seconds``, before looking at its token.
* ``nosniff``, ``no-referrer`` (an SSE URL may carry a token, and nothing here needs a
  referrer), ``DENY`` framing, a ``default-src 'none'`` CSP and ``no-store`` on API answers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

ACCESS_TOKEN_PARAM = "access_token"
ACCESS_TOKEN_SCOPE_KEY = "devops.access_token"
REDACTED = "***"
API_PREFIX = "/api/v1/devops"

#: For API answers and any HTML we did not write ourselves: load nothing, run nothing, never framed.
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", STRICT_CSP.encode()),
)
# Swagger UI and ReDoc come from jsDelivr (FastAPI's defaults); ReDoc also uses Google Fonts,
# styled-components (<style> elements) and a blob: web worker for its search.
CDN = "https://cdn.jsdelivr.net"
FAVICON = "https://fastapi.tiangolo.com"


# --------------------------------------------------------------------------- access token


def _split_access_token(query: bytes) -> tuple[bytes, str | None]:
    """The query string with every ``access_token`` value replaced by ``***``, and the last
    value (as Starlette's ``query_params[...]`` would pick), or None when there is none."""
    token: str | None = None
    parts = query.split(b"&")
    for index, part in enumerate(parts):
        name, sep, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) != ACCESS_TOKEN_PARAM:
            continue
        token = unquote_plus(value.decode("latin-1"), encoding="utf-8", errors="replace") if sep else ""
        parts[index] = f"{ACCESS_TOKEN_PARAM}={REDACTED}".encode()
    return (b"&".join(parts), token) if token is not None else (query, None)


def query_access_token(request: Request) -> str | None:
    """The ``?access_token=`` value the middleware set aside (only the SSE routes ask)."""
    return request.scope.get(ACCESS_TOKEN_SCOPE_KEY)


_TOKEN_IN_TEXT = re.compile(r"(?i)(access(?:_|%5f)token=)[^&\s\"']*")
# approval links (GET shows the page, the token still unused) and invitations carry their token in the path
_TOKEN_IN_PATH = re.compile(r"(/(?:approval_tokens|invitations)/)[^/?&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", _TOKEN_IN_TEXT.sub(rf"\g<1>{REDACTED}", text))


class RedactAccessToken(logging.Filter):
    """Rewrites ``access_token=<value>`` to ``access_token=***`` in a record's message and
    arguments (uvicorn's access record is ``'%s - "%s %s HTTP/%s" %d'`` with the path and
    query string as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token" in record.msg.lower():
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: redact(arg) if isinstance(arg, str) else arg for key, arg in record.args.items()}
        return True


def install_log_redaction() -> None:
    """On uvicorn's loggers, once per process (create_app runs for ``make up`` and for a plain
    ``uvicorn api.main:app``; logging config applied later keeps logger filters)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactAccessToken) for existing in logger.filters):
            logger.addFilter(RedactAccessToken())


# --------------------------------------------------------------------------- failed authentications


class AuthFailureLimiter:
    """Failed authentications per client address in a sliding window, in memory, per process.

    An address with ``limit`` failures in the last ``window`` seconds is locked out until the
    oldest of them leaves the window. Successes neither count nor reset (a valid token of one
    account must not buy guesses at others). At most ``max_addresses`` are tracked: expired ones
    are dropped first, then the least recently failing."""

    def __init__(self, limit: int, window: float, *, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it is not locked out."""
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            if times is None or len(times) < self.limit:
                return None
            return times[0] + self.window - now

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._recent(address, now)
            if times is None:
                if len(self._failures) >= self.max_addresses:
                    self._evict(now)
                times = self._failures[address] = deque(maxlen=self.limit)
            times.append(now)
            self._failures.move_to_end(address)

    def _evict(self, now: float) -> None:
        for address in [a for a, times in self._failures.items() if not times or times[-1] <= now - self.window]:
            del self._failures[address]
        while len(self._failures) >= self.max_addresses:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


def client_address(request: Request) -> str:
    # The socket peer. uvicorn replaces it with X-Forwarded-For only for peers it is told to
    # trust (`--forwarded-allow-ips`; scripts/up.py passes DEVOPS_TRUSTED_PROXIES or turns
    # proxy headers off).
    return request.client.host if request.client else "unknown"


def _limiter(request: Request) -> AuthFailureLimiter | None:
    return getattr(request.app.state, "auth_failures", None)


def refuse_if_locked_out(request: Request) -> None:
    """429 before the token is even looked at, for an address with too many failures."""
    limiter = _limiter(request)
    if limiter is None:
        return
    wait = limiter.retry_after(client_address(request))
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed authentications from your address: try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def record_auth_failure(request: Request) -> None:
    limiter = _limiter(request)
    if limiter is not None:
        limiter.failed(client_address(request))


# --------------------------------------------------------------------------- middleware


class SecurityMiddleware:
    """Outermost ASGI layer (outside Starlette's error middleware, so 500s get the headers too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string") or b""
        if query:
            scope["query_string"], token = _split_access_token(query)
            if token is not None:
                scope[ACCESS_TOKEN_SCOPE_KEY] = token
        api_answer = scope.get("path", "").startswith(API_PREFIX + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                if api_answer and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --------------------------------------------------------------------------- docs


def _inline_script_hashes(html: str) -> str:
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )


def _swagger_csp(html: str) -> str:
    return (f"default-src 'none'; script-src {CDN} {_inline_script_hashes(html)}; "
            f"style-src {CDN} 'unsafe-inline'; img-src 'self' data: {FAVICON}; font-src {CDN} data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


REDOC_CSP = (f"default-src 'none'; script-src {CDN}; worker-src blob:; "
             "style-src 'unsafe-inline' https://fonts.googleapis.com; font-src https://fonts.gstatic.com data:; "
             f"img-src 'self' data: {FAVICON}; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
             "form-action 'none'")


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """``/docs`` and ``/redoc`` as FastAPI serves them, plus the CSP each page needs (the
    middleware's strict one would blank them)."""

    async def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=request.scope.get("root_path", "").rstrip("/") + openapi_url,
                                   title=f"{app.title} - Swagger UI")
        html = page.body.decode()
        return HTMLResponse(html, headers={"Content-Security-Policy": _swagger_csp(html)})

    async def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(openapi_url=request.scope.get("root_path", "").rstrip("/") + openapi_url,
                              title=f"{app.title} - ReDoc")
        return HTMLResponse(page.body.decode(), headers={"Content-Security-Policy": REDOC_CSP})

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def install(app: FastAPI, settings: Settings) -> None:
    """Everything above, on one app (call once from create_app, after the routes)."""
    app.state.auth_failures = AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window_seconds)
    install_log_redaction()
    if settings.resolved_docs_enabled and app.openapi_url:
        install_docs(app, app.openapi_url)
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return SecurityMiddleware(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
