"""The request guard: every body, path and query value bounded before a route sees it.

The limits and the document parsers (YAML/JSON) are ``domain/safe_documents.py``; here they are
applied to raw requests: bodies over the limit → 413, integers beyond 64 bits (and beyond the
database column's width), non-finite numbers and NUL characters in paths, queries and bodies →
422 naming the field, decided before FastAPI builds anything from the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from domain.safe_documents import (  # noqa: F401  (the limits, re-exported for the API)
    _INLINE_PARSE_BYTES,
    INT64_MAX,
    INT64_MIN,
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_EXPANDED_CHARS,
    MAX_NODES,
    DocumentRefused,
    Loc,
    _too_large,
    check_value,
    load_yaml,
    loads_json,
)


def refusal_response(refused: DocumentRefused) -> JSONResponse:
    return JSONResponse(refused.body(), status_code=refused.status)


OWN_BODY_LIMIT = "x-max-body-bytes"

_INT = re.compile(r"\s*([+-]?)0*(\d[\d_]*)(?:\.0*)?\s*")
_JSON_TYPE = re.compile(r"^application/(json|[^;]*\+json)$|^text/json$")
_TEXT_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def int_out_of_range(raw: str) -> bool:
    """Whether text that pydantic would read as an integer falls outside signed 64 bits."""
    match = _INT.fullmatch(raw)
    if match is None:
        return False  # not an integer: the route's own validation answers
    digits = match.group(2).replace("_", "")
    if len(digits) > 19:
        return True
    value = int(digits) * (-1 if match.group(1) == "-" else 1)
    return not INT64_MIN <= value <= INT64_MAX


@dataclass
class _Operation:
    pattern: re.Pattern[str]  # parameters are one path segment
    loose: re.Pattern[str]  # text parameters may span segments (`{image:path}`, shown as `{image}`)
    int_params: set[tuple[str, str]]  # ("path" | "query", name)
    own_body_limit: int | None


def _is_int_schema(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    while "$ref" in schema:
        schema = spec.get("components", {}).get("schemas", {}).get(schema["$ref"].rsplit("/", 1)[1], {})
    if schema.get("type") == "integer":
        return True
    if schema.get("type") == "array":
        return _is_int_schema(spec, schema.get("items", {}))
    return any(_is_int_schema(spec, option) for option in schema.get("anyOf", []) + schema.get("oneOf", []))


def _operations(spec: dict[str, Any]) -> dict[str, list[_Operation]]:
    """Per method, every operation of the app's OpenAPI document: its path as a regex, its integer
    parameters, its own body limit. (The document is FastAPI's public view of the routes, so this
    does not depend on how routers are nested inside.)"""
    table: dict[str, list[_Operation]] = {}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            ints = {(p["in"], p["name"]) for p in operation.get("parameters", [])
                    if p.get("in") in ("path", "query") and _is_int_schema(spec, p.get("schema", {}))}

            def group(found: re.Match[str], loose: bool, ints: set[tuple[str, str]] = ints) -> str:
                name = found.group(1)
                return f"(?P<{name}>{'.+' if loose and ('path', name) not in ints else '[^/]+'})"

            template = re.escape(path)
            strict = re.compile("^" + re.sub(r"\\{([^{}]+)\\}", lambda m: group(m, False), template) + "$")
            loose = re.compile("^" + re.sub(r"\\{([^{}]+)\\}", lambda m: group(m, True), template) + "$")
            table.setdefault(method.upper(), []).append(
                _Operation(strict, loose, ints, operation.get(OWN_BODY_LIMIT)))
    return table


def _parameter_problem(operation: _Operation, params: dict[str, str],
                       query: list[tuple[str, str]]) -> DocumentRefused | None:
    values = [("path", name, value) for name, value in params.items()] + [("query", n, v) for n, v in query]
    for where, name, value in values:
        if "\x00" in value:
            return DocumentRefused((where, name), "must not contain a NUL character (%00)", "nul_character")
        if (where, name) in operation.int_params and int_out_of_range(value):
            return DocumentRefused((where, name), "integer out of range: must fit in a signed 64-bit integer",
                                   "int_out_of_range")
    return None


class RequestGuard:
    """ASGI middleware in front of every operation of the OpenAPI document: path and query values
    are checked against their declared integer types and for NUL; a JSON (or YAML/text) body is
    size-capped while it streams in and, for JSON, checked by ``loads_json`` before FastAPI or the
    route parses it. Requests matching no operation (404/405) pass through untouched."""

    def __init__(self, app: Any, api: Any) -> None:
        self.app, self.api = app, api
        self._table: dict[str, list[_Operation]] | None = None

    def _match(self, method: str, path: str) -> tuple[_Operation, dict[str, str]] | None:
        """The operations this request may reach, merged: the union of their integer parameters
        (path templates overlap, e.g. `/runs/stream` and `/runs/{run_id}`), their own body limit."""
        if self._table is None:
            self._table = _operations(self.api.openapi())
        candidates = self._table.get(method, ())
        found = [(op, m) for op in candidates if (m := op.pattern.match(path))]
        found = found or [(op, m) for op in candidates if (m := op.loose.match(path))]
        if not found:
            return None
        limits = [op.own_body_limit for op, _ in found if op.own_body_limit]
        merged = _Operation(found[0][0].pattern, found[0][0].loose, set().union(*(op.int_params for op, _ in found)),
                            max(limits) if limits else None)
        params: dict[str, str] = {}
        for _op, m in found:
            params.update(m.groupdict())
        return merged, params

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        matched = self._match(scope["method"], scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        operation, params = matched
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        problem = _parameter_problem(operation, params, query)
        if problem is not None:
            await refusal_response(problem)(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        is_json = not content_type or bool(_JSON_TYPE.match(content_type))
        if scope["method"] not in _BODY_METHODS or not (is_json or content_type in _TEXT_TYPES):
            await self.app(scope, receive, send)  # no body, or a binary one (a build context) the route limits
            return
        limit = operation.own_body_limit or MAX_BODY_BYTES
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            await refusal_response(_too_large(("body",), limit))(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > limit:
                await refusal_response(_too_large(("body",), limit))(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        raw = bytes(body)
        if is_json and raw.strip() and operation.own_body_limit is None:
            try:
                if len(raw) > _INLINE_PARSE_BYTES:
                    scope[_BODY_KEY] = await run_in_threadpool(loads_json, raw)
                else:
                    scope[_BODY_KEY] = loads_json(raw)
            except DocumentRefused as refused:
                await refusal_response(refused)(scope, receive, send)
                return
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass  # the route (or FastAPI) answers its usual 422 for broken JSON

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refused(_request: Any, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DocumentRefused)
    return refusal_response(exc)


# ---- what the database refuses ----------------------------------------------------------------------------------

_BODY_KEY = "devops.safe_parse.body"  # the guard's parsed JSON body, for naming a field below
_INT_BITS = (("smallint", 16), ("bigint", 64), ("integer", 32))


def _int_fields(request: Any) -> list[tuple[Loc, int]]:
    """Every integer the request carried (path, query, JSON body, digit-only text), with its place."""
    found: list[tuple[Loc, int]] = []

    def add(loc: Loc, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, str) and _INT.fullmatch(value) and len(value.strip()) <= 40:
            match = _INT.fullmatch(value)
            assert match is not None
            value = int(match.group(2).replace("_", "")) * (-1 if match.group(1) == "-" else 1)
        if isinstance(value, int):
            found.append((loc, value))

    for name, value in (request.scope.get("path_params") or {}).items():
        add(("path", name), value)
    for name, value in request.query_params.multi_items():
        add(("query", name), value)
    stack: list[tuple[Loc, Any]] = [(("body",), request.scope.get(_BODY_KEY))]
    while stack and len(found) < 1000:
        loc, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*loc, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))
        else:
            add(loc, value)
    return found


async def _database_refused(request: Any, exc: Exception) -> JSONResponse:
    """A value the database cannot hold (PostgreSQL: `integer out of range` for a 32-bit column,
    text with NUL, text longer than its column; SQLite: an integer beyond 64 bits) is the
    caller's input, not a server fault: 422, naming the request's integers that do not fit
    (the statement's parameters do not say which field they came from)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if isinstance(exc, OverflowError) or "out of range" in text:
        bits = 64 if isinstance(exc, OverflowError) else next((b for word, b in _INT_BITS if word in text), 32)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        message = f"integer out of range: the database stores this value in {bits} bits ({low} to {high})"
        fields = _int_fields(request)
        culprits = [loc for loc, value in fields if not low <= value <= high]
        # an overflow outside the database (date arithmetic, say): the request's large integers
        culprits = culprits or [loc for loc, value in fields if abs(value) > 2**31 - 1]
        locs = culprits or [("body",)]
        return JSONResponse({"detail": [{"loc": list(loc), "msg": message, "type": "int_out_of_range"}
                                        for loc in locs]}, status_code=422)
    if "(0x00)" in text:
        message, kind = "text must not contain a NUL character (\\u0000)", "nul_character"
    elif "too long" in text:
        message, kind = "a text value is longer than the database column holding it", "string_too_long"
    else:
        message, kind = "a value has a form the database cannot store", "value_error"
    return JSONResponse({"detail": [{"loc": ["body"], "msg": message, "type": kind}]}, status_code=422)


def install(app: Any) -> None:
    """Put ``RequestGuard`` in front of ``app``; answer ``DocumentRefused`` raised by a route (its
    own YAML/JSON parsing) as 413/422, and a value the database refuses as 422."""
    app.add_exception_handler(DocumentRefused, _refused)
    app.add_exception_handler(DataError, _database_refused)
    app.add_exception_handler(OverflowError, _database_refused)
    app.add_middleware(RequestGuard, api=app)
