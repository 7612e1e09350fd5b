"""JSON Schema (2020-12) for user documents: integration configuration, inputs and outputs,
prompt-template variables.

``check_schema`` refuses a schema that is itself invalid; ``validate`` returns every problem of
an instance as ``Invalid`` whose ``loc`` ends with the JSON pointer of the offending value
(``/config/url``) so a client can point at the field. Remote ``$ref``s are never fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable

from domain.errors import Invalid

_NO_REMOTE = Registry()  # an empty registry: a $ref outside the document does not resolve, nothing is fetched
MAX_PROBLEMS = 20


def pointer(path: Sequence[Any]) -> str:
    """RFC 6901 pointer of a path (``["a", 0, "b/c"]`` → ``/a/0/b~1c``)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def check_schema(schema: Any, field: Sequence[Any]) -> None:
    """``schema`` must be an object and a valid JSON Schema; else ``Invalid`` at ``field``."""
    if not isinstance(schema, dict):
        raise Invalid([{"loc": list(field), "msg": "must be a JSON Schema object", "type": "schema_invalid"}])
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = pointer(exc.absolute_path) or "/"
        raise Invalid([{"loc": [*field, where], "msg": f"not a valid JSON Schema at {where}: {exc.message}",
                        "type": "schema_invalid"}]) from None


def problems(instance: Any, schema: dict[str, Any]) -> list[tuple[str, str]]:
    """Every ``(json pointer, message)`` where ``instance`` breaks ``schema`` (first MAX_PROBLEMS)."""
    if not schema:
        return []
    validator = Draft202012Validator(schema, registry=_NO_REMOTE)
    found = []
    try:
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as exc:
        return [("/", f"the schema's $ref {getattr(exc, 'ref', '')!r} cannot be resolved (only refs inside "
                      "the schema are followed)")]
    for error in errors:
        found.append((pointer(error.absolute_path) or "/", error.message))
        if len(found) >= MAX_PROBLEMS:
            break
    return found


def validate(instance: Any, schema: dict[str, Any], field: Sequence[Any]) -> None:
    """``Invalid`` listing each problem at ``[*field, <json pointer>]`` with the message naming it."""
    found = problems(instance, schema)
    if found:
        raise Invalid([{"loc": [*field, where], "msg": f"{where}: {message}", "type": "schema_violation"}
                       for where, message in found])
