"""Save-time validation of the pipeline document (``domain/pipeline_document.py``), without a stack.

Each bad document must be refused naming the field (``loc``) and saying why (``msg``); the
API tests in ``test_pipelines.py`` prove the same errors reach clients as 422s.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from domain.pipeline_document import (
    InputDeclaration,
    PipelineDocument,
    coerce_input,
    normalized,
    parse_yaml,
    resolve_run_inputs,
    slugify,
)

# The example document of issue 2, section 3, copied verbatim.
ISSUE_EXAMPLE_YAML = """\
name: build-and-test
pipeline_type: custom          # review | implement | security | deploy | custom
allow_concurrent: false
timeout_minutes: 30
runner_labels: []
inputs:
  greeting: {type: string, default: hello, required: false}
triggers:
  manual: {}
  push: {branches: ["main", "release/*"]}
  schedule: {cron: "0 3 * * *", timezone: UTC}
steps:
  - id: hello
    name: Say hello
    type: run_tests
    with:
      command: 'echo "result=$GREETING" >> "$DEVOPS_OUTPUT"'
      env: {GREETING: "${{ inputs.greeting }}"}
  - id: check
    type: run_tests
    if: "${{ steps.hello.outputs.result == 'hello' }}"
    continue_on_error: false
    timeout_minutes: 5
    retry: {max_attempts: 2}
    with:
      command: 'test "$R" = hello'
      env: {R: "${{ steps.hello.outputs.result }}"}
"""


def step(step_id: str = "a", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "run_tests", "with": {"command": "true"}, **fields}


def document(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "steps": [step()], **fields}


def env_step(step_id: str, value: str) -> dict[str, Any]:
    return step(step_id, **{"with": {"command": 'echo "$X"', "env": {"X": value}}})


# (case, document, expected loc, a fragment the message must contain)
INVALID_DOCUMENTS: list[tuple[str, dict[str, Any], tuple[Any, ...], str]] = [
    ("unknown_step_type", document(steps=[step(type="teleport")]), ("steps", 0, "type"),
     "unknown step type 'teleport'; expected one of: checkout"),
    ("duplicate_step_id", document(steps=[step("a"), step("a")]), ("steps", 1, "id"), "duplicate step id 'a'"),
    ("expression_syntax", document(inputs={"x": {}}, steps=[step(**{"if": "${{ inputs.x == }}"})]),
     ("steps", 0, "if"), "invalid expression"),
    ("reference_to_missing_step", document(steps=[env_step("a", "${{ steps.ghost.outputs.y }}")]),
     ("steps", 0, "with", "env", "X"), "step 'ghost' does not exist or does not come before this step"),
    ("reference_to_later_step", document(steps=[env_step("a", "${{ steps.b.outputs.y }}"), step("b")]),
     ("steps", 0, "with", "env", "X"), "step 'b' does not exist or does not come before this step"),
    ("reference_to_undeclared_input", document(steps=[env_step("a", "${{ inputs.nope }}")]),
     ("steps", 0, "with", "env", "X"), "input 'nope' is not declared under `inputs`"),
    ("expression_in_shell_command",
     document(inputs={"x": {}}, steps=[step(**{"with": {"command": "echo ${{ inputs.x }}"}})]),
     ("steps", 0, "with", "command"), "pass the value through env"),
    ("bad_cron", document(triggers={"schedule": {"cron": "61 * * * *"}}), ("triggers", "schedule", "cron"),
     "'61 * * * *' is not a valid 5-field cron expression"),
    ("six_field_cron", document(triggers={"schedule": {"cron": "0 0 3 * * *"}}), ("triggers", "schedule", "cron"),
     "not a valid 5-field cron expression"),
    ("unknown_time_zone", document(triggers={"schedule": {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}}),
     ("triggers", "schedule", "timezone"), "unknown time zone 'Mars/Olympus'"),
    ("timeout_zero", document(timeout_minutes=0), ("timeout_minutes",), "greater than or equal to 1"),
    ("timeout_361", document(timeout_minutes=361), ("timeout_minutes",), "less than or equal to 360"),
    ("step_timeout_361", document(steps=[step(timeout_minutes=361)]), ("steps", 0, "timeout_minutes"),
     "less than or equal to 360"),
    ("unknown_top_level_field", document(colour="red"), ("colour",), "Extra inputs are not permitted"),
    ("unknown_step_field", document(steps=[step(run="true")]), ("steps", 0, "run"), "Extra inputs are not permitted"),
    ("empty_steps", document(steps=[]), ("steps",), "at least 1 item"),
    ("invalid_step_id_characters", document(steps=[step("bad id!")]), ("steps", 0, "id"),
     "should match pattern"),
    ("unknown_pipeline_type", document(pipeline_type="nightly"), ("pipeline_type",), "'review'"),
    ("choice_input_without_options", document(inputs={"c": {"type": "choice"}}), ("inputs", "c"),
     "a choice input needs a non-empty `options` list"),
    ("input_default_of_wrong_type", document(inputs={"n": {"type": "number", "default": "abc"}}), ("inputs", "n"),
     "expected a number, got 'abc'"),
    ("unknown_expression_context", document(steps=[env_step("a", "${{ github.sha }}")]),
     ("steps", 0, "with", "env", "X"), "unknown context 'github'"),
    ("unknown_step_property", document(steps=[step("a"), env_step("b", "${{ steps.a.result }}")]),
     ("steps", 1, "with", "env", "X"), "steps.a.result is not a step property"),
    ("invalid_env_name", document(steps=[step(**{"with": {"command": "true", "env": {"BAD-NAME": "x"}}})]),
     ("steps", 0, "with", "env"), "env must map environment variable names"),
    ("retry_attempts_zero", document(steps=[step(retry={"max_attempts": 0})]),
     ("steps", 0, "retry", "max_attempts"), "greater than or equal to 1"),
    ("unknown_trigger", document(triggers={"nightly": {}}), ("triggers", "nightly"), "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("doc", "loc", "fragment"), [c[1:] for c in INVALID_DOCUMENTS],
                         ids=[c[0] for c in INVALID_DOCUMENTS])
def test_invalid_document_is_refused_naming_the_field(doc: dict[str, Any], loc: tuple[Any, ...], fragment: str):
    with pytest.raises(ValidationError) as info:
        PipelineDocument.model_validate(doc)
    errors = [(err["loc"], err["msg"]) for err in info.value.errors()]
    assert any(err_loc == loc and fragment in msg for err_loc, msg in errors), errors


def test_issue_example_document_is_valid_and_normalizes_with_defaults_written_out():
    doc = PipelineDocument.model_validate(yaml.safe_load(ISSUE_EXAMPLE_YAML))
    data = normalized(doc)
    assert data["slug"] == "build-and-test"
    assert data["allow_concurrent"] is False
    assert data["timeout_minutes"] == 30
    assert data["triggers"] == {"manual": {}, "push": {"branches": ["main", "release/*"]},
                                "schedule": {"cron": "0 3 * * *", "timezone": "UTC", "inputs": {}}}
    assert [s["id"] for s in data["steps"]] == ["hello", "check"]
    assert data["steps"][0]["name"] == "Say hello"
    assert data["steps"][1]["name"] == "check"
    assert data["steps"][1]["retry"] == {"max_attempts": 2, "delay_seconds": 0}
    assert data["steps"][1]["if"] == "${{ steps.hello.outputs.result == 'hello' }}"


def test_every_error_of_a_document_is_reported_at_once():
    doc = document(steps=[step("a"), step("a"), env_step("c", "${{ steps.zzz.outputs.y }}")])
    with pytest.raises(ValidationError) as info:
        PipelineDocument.model_validate(doc)
    locs = {err["loc"] for err in info.value.errors()}
    assert locs == {("steps", 1, "id"), ("steps", 2, "with", "env", "X")}


def test_expressions_in_env_and_non_shell_with_fields_are_allowed():
    doc = document(inputs={"ref": {"default": "main"}}, steps=[
        step("a", **{"with": {"command": 'echo "$REF"', "env": {"REF": "${{ inputs.ref }}"}}}),
        step("b", type="checkout", **{"with": {"url": "/tmp/repo", "ref": "${{ steps.a.outputs.sha }}"}}),
    ])
    assert PipelineDocument.model_validate(doc).steps[1].with_["ref"] == "${{ steps.a.outputs.sha }}"


def test_a_bare_if_condition_is_checked_like_a_template():
    assert PipelineDocument.model_validate(document(
        inputs={"x": {}}, steps=[step(**{"if": "inputs.x == 'a'"})])).steps[0].if_ == "inputs.x == 'a'"
    with pytest.raises(ValidationError) as info:
        PipelineDocument.model_validate(document(steps=[step(**{"if": "inputs.y == 'a'"})]))
    assert info.value.errors()[0]["loc"] == ("steps", 0, "if")


def test_slug_defaults_to_the_slugified_name():
    assert PipelineDocument.model_validate(document(name="Build & Test!")).resolved_slug() == "build-test"
    assert PipelineDocument.model_validate(document(name="x", slug="given")).resolved_slug() == "given"
    assert slugify("***") == "pipeline"


def test_invalid_yaml_names_the_line():
    with pytest.raises(ValueError, match=r"invalid YAML at line 3, column 15: mapping values are not allowed"):
        parse_yaml("name: x\nsteps: []\ndescription: a: b\n")


# ---- run inputs --------------------------------------------------------------------------

DECLARED = {
    "greeting": {"type": "string", "default": "hello"},
    "count": {"type": "number", "required": True},
    "verbose": {"type": "boolean", "default": False},
    "env": {"type": "choice", "options": ["staging", "production"], "default": "staging"},
}


def test_run_inputs_are_typed_and_defaults_applied():
    resolved, errors = resolve_run_inputs(DECLARED, {"count": "42", "verbose": "true"})
    assert errors == []
    assert resolved == {"greeting": "hello", "count": 42, "verbose": True, "env": "staging"}


@pytest.mark.parametrize(("given", "name", "fragment"), [
    ({"count": 1, "colour": "red"}, "colour", "unknown input 'colour'"),
    ({"count": "abc"}, "count", "expected a number, got 'abc'"),
    ({}, "count", "this input is required"),
    ({"count": 1, "env": "moon"}, "env", "must be one of: staging, production"),
    ({"count": 1, "verbose": "maybe"}, "verbose", "expected a boolean, got 'maybe'"),
], ids=["unknown", "wrong_type", "missing_required", "choice_outside_options", "bad_boolean"])
def test_bad_run_inputs_name_the_input(given: dict[str, Any], name: str, fragment: str):
    _resolved, errors = resolve_run_inputs(DECLARED, given)
    assert [e["loc"] for e in errors] == [["body", "inputs", name]]
    assert fragment in errors[0]["msg"], errors


def test_coerce_input_keeps_numbers_and_refuses_booleans_as_numbers():
    number = InputDeclaration(type="number")
    assert coerce_input(number, "2.5") == 2.5
    assert coerce_input(number, 7) == 7
    with pytest.raises(Exception, match="expected a number, got True"):
        coerce_input(number, True)


def test_broken_or_empty_trigger_globs_are_refused_naming_the_pattern():
    document = {"name": "p", "steps": [{"id": "a", "type": "run_tests", "with": {"command": "true"}}],
                "triggers": {"push": {"branches": ["main", "[z-a]"], "paths_ignore": ["docs/**", "!"]},
                             "pull_request": {"branches": ["release/*", ""]}}}
    with pytest.raises(ValidationError) as caught:
        PipelineDocument.model_validate(document)
    problems = {tuple(e["loc"]): e["msg"] for e in caught.value.errors()}
    assert set(problems) == {("triggers", "push", "branches", 1), ("triggers", "push", "paths_ignore", 1),
                             ("triggers", "pull_request", "branches", 1)}
    assert "bad character range" in problems[("triggers", "push", "branches", 1)]
    assert "empty pattern" in problems[("triggers", "pull_request", "branches", 1)]
    document["triggers"] = {"push": {"branches": ["main", "release/**", "!release/old-*"], "tags": ["v[0-9]*"]}}
    assert PipelineDocument.model_validate(document).triggers.push.branches[2] == "!release/old-*"
