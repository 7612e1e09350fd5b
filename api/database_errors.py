"""The database being unreachable is a 503 with ``Retry-After``, not a 500.

Connection refused, a PostgreSQL server restarting, an unreadable SQLite file, a locked SQLite
database, a pool with no free connection: SQLAlchemy raises ``OperationalError`` /
``InterfaceError`` (from the driver), ``DisconnectionError`` or ``TimeoutError`` (pool). All of
them pass if the client tries again later, so every route (authentication included, which reads
the token first) answers 503 like ``/health`` does. Other database errors (integrity, data) are
not these classes and keep their own handling.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from settings import Settings

log = logging.getLogger(__name__)

UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
MESSAGE = "the database is unavailable; try again shortly"


def install(app: FastAPI, settings: Settings) -> None:
    retry_after = str(settings.database_retry_after_seconds)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The driver's text can name the host and user: logged for the operator, not answered.
        log.warning("database unavailable during %s %s: %s: %s", request.method, request.url.path,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return JSONResponse(status_code=503, content={"detail": MESSAGE}, headers={"Retry-After": retry_after})

    for exc_class in UNAVAILABLE:
        app.add_exception_handler(exc_class, unavailable)


__all__ = ["install", "MESSAGE", "UNAVAILABLE"]
