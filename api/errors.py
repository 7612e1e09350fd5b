"""Helpers that turn problems into the API's error shapes.

Validation problems answer 422 in FastAPI's own shape, ``{"detail": [{"loc", "msg", "type"}]}``,
so clients handle one format whether FastAPI or our checks found the problem.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, message)


def unprocessable(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError(errors)


def field_error(loc: list[Any], message: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": message, "type": kind}])


def from_validation_error(exc: ValidationError, prefix: tuple[Any, ...] = ("body",)) -> RequestValidationError:
    """Pydantic errors without the echoed input (it can be large or hold secrets)."""
    return RequestValidationError([
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ])
