"""What the OpenAPI document says about every operation beyond its own declaration.

* ``operation_id``: the route function's name (``list_pipelines``), so generated clients read
  well; route function names are unique app-wide for that (``tests/api/test_openapi.py``).
* Error responses: every refusal answers ``{"detail": ...}`` (``api/errors.py``), and which ones
  an operation can give follows from how it is declared, so they are documented by rule in
  :func:`document_errors` rather than by hand on each route (a route's own ``responses=`` entry
  for an error code keeps its words and gains the model):

  ======  =====================================================================================
  401     it needs an API token (depends on ``api.deps.bearer``)
  403     it needs an API token: its scope (see Scopes below)
  404     its path names something (``{id}`` in the path)
  409     it changes something (POST, PUT, PATCH, DELETE)
  429     it needs an API token: too many failed sign-ins from the caller's address
  503     always: the database (or, where used, Temporal) is unreachable; retry later
  ======  =====================================================================================

* Scopes: every operation that takes an API token names the token scope it needs
  (``domain.access.required_scope``) as ``x-required-scope``, starts its description with it,
  and lists 403 (the caller's role or token lacks it) — :func:`document_scopes`.

  422 (invalid parameters or body) is FastAPI's own entry, in the same ``{"detail": [...]}`` shape.
  Codes only some routes give (400, 410, 413, 415, 502, a quota's 429) are declared on those
  routes with ``responses=`` and a description; this adds the model to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.utils import create_model_field
from pydantic import BaseModel, Field

from api import security
from api.deps import bearer
from domain import access

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ErrorPublic(BaseModel):
    """Every error answer (FastAPI's own 422 has the list form)."""

    detail: str | list[dict[str, Any]] = Field(
        description="what went wrong, in words; for invalid input a list of {loc, msg, type} problems")


def operation_id(route: APIRoute) -> str:
    """``generate_unique_id_function`` of the app: the route function's name."""
    return route.name


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def errors_of(route: APIRoute) -> dict[int, str]:
    """The error status codes ``route`` can answer, with what each means there."""
    calls = list(_calls(route.dependant))
    authenticated = any(call is bearer for call in calls)
    found: dict[int, str] = {}
    if authenticated:
        found[401] = "missing, invalid, expired or revoked API token"
    if "{" in route.path_format:
        found[404] = "the thing the path names does not exist in the caller's account"
    if route.methods & WRITES:
        found[409] = "the request clashes with the current state (the detail says how)"
    if authenticated:
        found[429] = "too many failed sign-ins from this address lately (Retry-After says when to try again)"
    found[503] = "the database or Temporal is unreachable; nothing was done unless the detail says otherwise"
    return found


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every ``APIRoute`` declared under ``routes``: FastAPI includes routers lazily (the declared
    route objects sit inside the included router, and each request or schema reads them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def document_errors(app: FastAPI) -> None:
    """Add the error responses of :func:`errors_of` to every route of ``app`` (call after all
    routes are included, before the schema is first generated). Idempotent: the declared routes
    are module-level objects that every ``create_app`` shares."""
    for route in _api_routes(app.routes):
        if not route.include_in_schema:
            continue
        declared = {int(code): (response.get("description") or "") for code, response in route.responses.items()
                    if str(code).isdigit() and int(code) >= 400}
        for code, description in {**errors_of(route), **declared}.items():
            own = route.responses.get(code) or route.responses.get(str(code)) or {}
            if "model" in own or "content" in own:
                continue  # the route documents this answer itself
            route.responses.pop(str(code), None)
            route.responses[code] = {"description": own.get("description", description), "model": ErrorPublic}
            route.response_fields[code] = create_model_field(
                name=f"Response_{code}_{route.unique_id}", type_=ErrorPublic, mode="serialization")


def route_templates(app: FastAPI) -> dict[str, str]:
    """Each operation id with its full path template, from the app's OpenAPI document (built
    once here, then cached by FastAPI for /openapi.json)."""
    return {operation["operationId"]: path for path, operations in app.openapi()["paths"].items()
            for operation in operations.values() if isinstance(operation, dict) and "operationId" in operation}


SCOPE_REFUSED = "the caller's role or API token lacks the scope this needs (the detail names it)"


def document_scopes(app: FastAPI) -> None:
    """Name the scope of every operation that takes an API token in the app's OpenAPI document:
    ``x-required-scope``, a first line of its description, and a 403 answer. FastAPI rebuilds the
    document when routes change (and copies route attributes into cached per-include contexts),
    so this wraps ``app.openapi`` and annotates each document it builds, idempotently."""
    generate = app.openapi

    def openapi_with_scopes() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            template = path.removeprefix(security.API_PREFIX)
            if not path.startswith(security.API_PREFIX) or access.is_public(template):
                continue
            for method, operation in operations.items():
                if not isinstance(operation, dict) or "operationId" not in operation or "x-required-scope" in operation:
                    continue
                scope = access.required_scope(method, template)
                operation["x-required-scope"] = scope
                line = f"Requires the token scope `{scope}`."
                description = operation.get("description")
                operation["description"] = f"{line}\n\n{description}" if description else line
                operation.setdefault("responses", {}).setdefault("403", {
                    "description": SCOPE_REFUSED,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}})
        return schema

    app.openapi = openapi_with_scopes  # type: ignore[method-assign]
