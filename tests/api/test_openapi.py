"""The OpenAPI document is usable by a generated client and a reader: readable unique operation
ids, a summary on every operation, its error answers listed, statuses as enums, one list shape.

Built from ``create_app`` without starting it (no database, no Temporal needed)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from api.main import API_PREFIX, create_app
from settings import Settings

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# `status` fields that carry an engine's own words rather than one of our statuses.
FREE_TEXT_STATUS = {
    "ContainerPublic",  # Docker's "Up 5 minutes (healthy)"
    "ContainerActionPublic",  # Docker's state in words: "running", "exited (0)"
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _is_enum(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = _resolve(spec, schema)
    if "enum" in schema or "const" in schema:
        return True
    options = [o for o in schema.get("anyOf", []) if _resolve(spec, o).get("type") != "null"]
    return bool(options) and all(_is_enum(spec, o) for o in options)


def _response_schemas(spec: dict[str, Any]) -> set[str]:
    """Names of the component schemas reachable from any response."""
    seen: set[str] = set()
    todo: list[Any] = [response for _, _, operation in _operations(spec)
                       for response in operation.get("responses", {}).values()]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    todo.append(spec["components"]["schemas"][name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return seen


def test_operation_ids_are_the_route_function_names_unique_and_snake_case(spec):
    ids = [operation.get("operationId", "") for _, _, operation in _operations(spec)]
    problems = [i for i in ids if not SNAKE.match(i) or "api_v1" in i or re.search(r"_(get|put|post|delete|patch)$", i)]
    assert not problems, f"not readable snake_case names (FastAPI's default ids?): {problems}"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"operation ids used twice (rename the route functions): {duplicates}"


def test_every_operation_has_a_summary(spec):
    missing = [f"{method} {path}" for method, path, operation in _operations(spec)
               if not (operation.get("summary") or "").strip()]
    assert not missing, missing


def test_every_operation_lists_its_error_answers(spec):
    problems = []
    for method, path, operation in _operations(spec):
        if not path.startswith(API_PREFIX):
            continue
        responses = operation.get("responses", {})
        errors = {code for code in responses if code.startswith("4")}
        if not errors:
            problems.append(f"{method} {path}: no 4xx listed")
        if "{" in path and "404" not in responses:
            problems.append(f"{method} {path}: names something but lists no 404")
        if operation.get("security") and "401" not in responses:
            problems.append(f"{method} {path}: needs a token but lists no 401")
        if "503" not in responses:
            problems.append(f"{method} {path}: no 503 (database or Temporal unreachable)")
        for code in errors - {"422"}:
            if not responses[code].get("content"):
                problems.append(f"{method} {path}: {code} without a body schema")
    assert not problems, "\n".join(problems)


def test_status_fields_of_answers_are_enums(spec):
    schemas = spec["components"]["schemas"]
    loose = [f"{name}.status" for name in sorted(_response_schemas(spec))
             if "status" in schemas[name].get("properties", {}) and name not in FREE_TEXT_STATUS
             and not _is_enum(spec, schemas[name]["properties"]["status"])]
    assert not loose, f"statuses typed as plain strings (use domain.statuses enums): {loose}"


def test_run_and_step_statuses_show_their_values(spec):
    schemas = spec["components"]["schemas"]
    run_status = _resolve(spec, schemas["PipelineRunPublic"]["properties"]["status"])
    assert run_status["enum"] == ["pending", "queued", "running", "success", "failure", "cancelled"]
    step_status = _resolve(spec, schemas["StepExecutionPublic"]["properties"]["status"])
    assert "waiting_approval" in step_status["enum"]


def test_every_list_is_a_page_whose_count_is_the_total(spec):
    schemas = spec["components"]["schemas"]
    problems = []
    for name in sorted(_response_schemas(spec)):
        properties = schemas[name].get("properties", {})
        if "data" in properties and "count" in properties:
            description = properties["count"].get("description", "")
            if "total" not in description:
                problems.append(f"{name}: count is not documented as the total (use api.pages.Page)")
    assert not problems, problems
