"""Domain errors: what went wrong in words of the domain, raised by services and adapters.

They know nothing of HTTP. The API maps each class to one status code in one exception
handler (``api/errors.py``); an activity turns them into Temporal ``ApplicationError``s.
Catch at the level you need::

    DomainError            any refusal a caller can act on (``detail`` is the message)
    ├── NotFound           the named thing does not exist for this account (404)
    ├── Conflict           the request clashes with the current state (409)
    ├── Invalid            input problems, a list of {loc, msg, type} (422)
    ├── QuotaExceeded      a limit of the account is reached (429)
    ├── Unavailable        a dependency (Temporal, the database) is down; try later (503)
    ├── Forbidden          the caller may not do this to a thing it can see (403)
    ├── Gone               the thing existed but is used up or expired (410)
    └── UpstreamFailed     an outside system (engine, registry, provider) failed (502)

``detail`` is a string, or for ``Invalid`` (and a few ``Conflict``s) a list of problems in
FastAPI's validation shape, so clients parse one format whoever found the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """Base of every refusal a caller can act on."""

    def __init__(self, detail: Any, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        self.headers = dict(headers or {})


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class Invalid(DomainError):
    """``detail`` is a list of ``{"loc": [...], "msg": str, "type": str}`` problems."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(list(problems))

    def errors(self) -> list[dict[str, Any]]:
        return list(self.detail)


class QuotaExceeded(DomainError):
    pass


class Unavailable(DomainError):
    def __init__(self, detail: Any, *, retry_after: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        merged = dict(headers or {})
        if retry_after is not None:
            merged["Retry-After"] = str(retry_after)
        super().__init__(detail, headers=merged)


class Forbidden(DomainError):
    pass


class Gone(DomainError):
    pass


class UpstreamFailed(DomainError):
    pass


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} not found")


def conflict(message: Any) -> Conflict:
    return Conflict(message)


def unprocessable(problems: list[dict[str, Any]]) -> Invalid:
    return Invalid(problems)


def field_error(loc: list[Any], message: str, kind: str = "value_error") -> Invalid:
    """One problem in the request body at ``loc``."""
    return Invalid([{"loc": ["body", *loc], "msg": message, "type": kind}])


def from_validation_error(exc: Any, prefix: tuple[Any, ...] = ("body",)) -> Invalid:
    """Pydantic errors without the echoed input (it can be large or hold secrets)."""
    return Invalid([
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ])
