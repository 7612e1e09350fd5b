"""The web dashboard at ``/ui``: static files (vanilla ES modules, no build step) that talk only
to the JSON API, plus the two session endpoints that turn an API token into an HttpOnly cookie
(api/ui/session.py). Nothing here renders data on the server."""

from __future__ import annotations

from fastapi import FastAPI

from api.ui import session, static


def install(app: FastAPI) -> None:
    """``/ui/session`` and ``/ui``, ``/ui/``, ``/ui/static/...`` (all out of the OpenAPI document)."""
    app.include_router(session.router)
    static.install(app)
