"""The dashboard's files: ``index.html`` at ``/ui`` and ``/ui/``, everything else of
``api/ui/static/`` under ``/ui/static/...``. Every answer carries the dashboard's
Content-Security-Policy (this origin only: no inline script or style, nothing from elsewhere;
api/security.py keeps a policy a response sets itself) and ``no-cache``, so a new release's files
are picked up at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = {"Content-Security-Policy": UI_CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _WithHeaders:
    """Static files with the dashboard's headers added to each answer."""

    def __init__(self, app: StaticFiles) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers") or []
                           if k.lower() not in (b"content-security-policy", b"cache-control")]
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()
                            if k.lower() != "x-content-type-options"]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    async def index(_request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)

    app.add_route("/ui", index, include_in_schema=False)
    app.add_route("/ui/", index, include_in_schema=False)
    app.mount("/ui/static", _WithHeaders(StaticFiles(directory=STATIC_DIR)), name="ui-static")
