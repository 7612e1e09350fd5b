"""Domain errors to HTTP: the one place that maps ``domain.errors`` classes to status codes.

Validation problems answer 422 in FastAPI's own shape, ``{"detail": [{"loc", "msg", "type"}]}``,
so clients handle one format whether FastAPI or a service found the problem. Routes raise the
domain errors too (the helpers are re-exported here for them).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    QuotaExceeded,
    Unavailable,
    UpstreamFailed,
    conflict,
    field_error,
    from_validation_error,
    not_found,
    unprocessable,
)

__all__ = ["STATUS_OF", "conflict", "field_error", "from_validation_error", "install", "not_found",
           "status_of", "unprocessable"]

STATUS_OF: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    QuotaExceeded: 429,
    Unavailable: 503,
    Forbidden: 403,
    Gone: 410,
    UpstreamFailed: 502,
}


def status_of(exc: DomainError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(status_code=status_of(exc), content={"detail": jsonable_encoder(exc.detail)},
                            headers=exc.headers or None)
