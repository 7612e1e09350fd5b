"""The pipelines routes: CRUD, system pipelines, clone, slugs, trigger inputs, and 422s that
name the field and change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import update

from db.models import Pipeline
from tests.harness import wait_for, wait_run


def step(step_id: str = "a", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "run_tests", "with": {"command": "true"}, **fields}


def doc(name: str = "p", **fields: Any) -> dict[str, Any]:
    return {"name": name, "steps": [step()], **fields}


def env_step(step_id: str, value: str) -> dict[str, Any]:
    return step(step_id, **{"with": {"command": 'echo "$X"', "env": {"X": value}}})


def create(client: httpx.Client, document: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/pipelines", json=document)
    assert response.status_code == 201, response.text
    return response.json()


def pipeline_count(client: httpx.Client) -> int:
    return client.get("/pipelines").json()["count"]


def run_count(client: httpx.Client) -> int:
    return client.get("/pipeline_runs").json()["count"]


def make_system(stack, pipeline_id: int) -> None:
    with stack.sessions.begin() as session:
        session.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(is_system=True))


# ---- CRUD ----------------------------------------------------------------------------------


def test_create_echoes_the_document_with_defaults(stack):
    client = stack.account().client
    body = create(client, {
        "name": "Build & Test", "description": "builds", "pipeline_type": "deploy", "timeout_minutes": 45,
        "allow_concurrent": False, "runner_labels": ["linux"], "features": {"cache": True},
        "inputs": {"greeting": {"type": "string", "default": "hi"}}, "env": {"LEVEL": "debug"},
        "triggers": {"manual": {}, "push": {"branches": ["main"]}},
        "steps": [step("first", name="First step", timeout_minutes=5, retry={"max_attempts": 3}),
                  env_step("second", "${{ steps.first.outputs.x }}")],
    })
    assert isinstance(body["id"], int)
    assert body["name"] == "Build & Test"
    assert body["slug"] == "build-test"
    assert body["description"] == "builds"
    assert body["pipeline_type"] == "deploy"
    assert body["timeout_minutes"] == 45
    assert body["allow_concurrent"] is False
    assert body["runner_labels"] == ["linux"]
    assert body["features"] == {"cache": True}
    assert body["inputs"] == {"greeting": {"type": "string", "description": "", "required": False, "default": "hi"}}
    assert body["env"] == {"LEVEL": "debug"}
    assert body["triggers"] == {"manual": {}, "push": {"branches": ["main"]}}
    assert body["is_system"] is False
    assert body["is_active"] is True
    assert body["last_run_number"] == 0
    assert [(s["id"], s["name"], s["type"], s["position"]) for s in body["steps"]] == [
        ("first", "First step", "run_tests", 0), ("second", "second", "run_tests", 1)]
    assert body["steps"][0]["timeout_minutes"] == 5
    assert body["steps"][0]["retry"] == {"max_attempts": 3, "delay_seconds": 0}
    assert body["steps"][1]["with"] == {"command": 'echo "$X"', "env": {"X": "${{ steps.first.outputs.x }}"}}


def test_list_counts_and_filters_by_type_and_active(stack):
    client = stack.account().client
    assert client.get("/pipelines").json() == {"data": [], "count": 0}
    first = create(client, doc("one", pipeline_type="deploy"))
    second = create(client, doc("two", pipeline_type="review", is_active=False))
    third = create(client, doc("three", pipeline_type="deploy"))

    listed = client.get("/pipelines").json()
    assert listed["count"] == 3
    assert [p["id"] for p in listed["data"]] == [first["id"], second["id"], third["id"]]
    deploys = client.get("/pipelines", params={"pipeline_type": "deploy"}).json()
    assert (deploys["count"], [p["name"] for p in deploys["data"]]) == (2, ["one", "three"])
    inactive = client.get("/pipelines", params={"is_active": "false"}).json()
    assert (inactive["count"], [p["name"] for p in inactive["data"]]) == (1, ["two"])
    paged = client.get("/pipelines", params={"limit": 1, "offset": 1}).json()
    assert (paged["count"], [p["name"] for p in paged["data"]]) == (3, ["two"])


def test_an_unknown_pipeline_type_filter_is_422(stack):
    response = stack.account().client.get("/pipelines", params={"pipeline_type": "nightly"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "pipeline_type"]
    assert "'review', 'implement', 'security', 'deploy' or 'custom'" in error["msg"]


def test_show_returns_the_pipeline_and_unknown_id_is_404(stack):
    client = stack.account().client
    created = create(client, doc("shown"))
    shown = client.get(f"/pipelines/{created['id']}")
    assert shown.status_code == 200
    assert shown.json() == created
    missing = client.get("/pipelines/999999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "pipeline not found"}


def test_put_replaces_the_whole_definition(stack):
    client = stack.account().client
    created = create(client, doc("before", description="old", env={"A": "1"},
                                 steps=[step("a"), step("b"), step("c")]))
    response = client.put(f"/pipelines/{created['id']}", json={
        "name": "after", "steps": [step("z", name="only step")]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == created["id"]
    assert (body["name"], body["slug"], body["description"], body["env"]) == ("after", "after", "", {})
    assert [(s["id"], s["name"]) for s in body["steps"]] == [("z", "only step")]
    assert client.get(f"/pipelines/{created['id']}").json()["steps"] == body["steps"]
    assert pipeline_count(client) == 1


def test_patch_changes_some_fields_and_an_inactive_pipeline_cannot_be_triggered(stack):
    client = stack.account().client
    created = create(client, doc("patched", description="d", steps=[step("a"), step("b")]))
    response = client.patch(f"/pipelines/{created['id']}", json={"is_active": False, "description": "paused"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["is_active"], body["description"], body["name"]) == (False, "paused", "patched")
    assert [s["id"] for s in body["steps"]] == ["a", "b"]

    refused = client.post(f"/pipelines/{created['id']}/trigger", json={})
    assert refused.status_code == 409
    assert "inactive" in refused.json()["detail"]
    assert run_count(client) == 0

    assert client.patch(f"/pipelines/{created['id']}", json={"is_active": True}).json()["is_active"] is True


def test_patch_with_an_invalid_change_is_422_and_changes_nothing(stack):
    client = stack.account().client
    created = create(client, doc("keep"))
    response = client.patch(f"/pipelines/{created['id']}", json={"timeout_minutes": 0, "description": "lost"})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "timeout_minutes"]]
    assert client.get(f"/pipelines/{created['id']}").json() == created


def test_delete_answers_204_then_404(stack):
    client = stack.account().client
    created = create(client, doc("doomed"))
    assert client.delete(f"/pipelines/{created['id']}").status_code == 204
    assert client.get(f"/pipelines/{created['id']}").status_code == 404
    assert client.delete(f"/pipelines/{created['id']}").status_code == 404
    assert pipeline_count(client) == 0


def test_delete_removes_the_pipelines_finished_runs_including_retries(stack):
    client = stack.account().client
    created = create(client, doc("with-runs"))
    run = wait_run(client, client.post(f"/pipelines/{created['id']}/trigger", json={}).json()["id"])
    retry = wait_run(client, client.post(f"/pipeline_runs/{run['id']}/retry").json()["id"])
    assert retry["retry_of_run_id"] == run["id"]
    assert client.delete(f"/pipelines/{created['id']}").status_code == 204
    assert client.get("/pipeline_runs").json()["count"] == 0
    assert client.get(f"/pipeline_runs/{run['id']}").status_code == 404


def test_delete_with_an_unfinished_run_is_409_until_it_is_cancelled(stack):
    client = stack.account().client
    created = create(client, doc("busy", steps=[step("wait", **{"with": {"command": "echo started; sleep 60"}})]))
    run = client.post(f"/pipelines/{created['id']}/trigger", json={}).json()
    wait_for(lambda: client.get(f"/pipeline_runs/{run['id']}/logs").json()["count"] > 0, message="the step to start")
    refused = client.delete(f"/pipelines/{created['id']}")
    assert refused.status_code == 409
    assert f"unfinished runs ({run['id']})" in refused.json()["detail"]
    assert client.get(f"/pipelines/{created['id']}").status_code == 200
    assert client.post(f"/pipeline_runs/{run['id']}/cancel").status_code == 202
    assert wait_run(client, run["id"])["status"] == "cancelled"
    assert client.delete(f"/pipelines/{created['id']}").status_code == 204


def test_a_run_after_the_newest_runs_were_deleted_gets_a_new_id_and_runs(stack):
    """Run ids name workflows (run-<id>) and Temporal starts a run's workflow once: SQLite used to
    hand the deleted newest run's id out again, and that run stayed pending forever."""
    client = stack.account().client
    first = create(client, doc("short-lived"))
    old = wait_run(client, client.post(f"/pipelines/{first['id']}/trigger", json={}).json()["id"])
    assert old["status"] == "success"
    assert client.delete(f"/pipelines/{first['id']}").status_code == 204
    second = create(client, doc("next-one"))
    new = wait_run(client, client.post(f"/pipelines/{second['id']}/trigger", json={}).json()["id"], timeout=30)
    assert new["id"] > old["id"]
    assert new["status"] == "success", new


def test_a_deleted_pipelines_slug_can_be_used_again(stack):
    client = stack.account().client
    created = create(client, doc("again"))
    assert client.delete(f"/pipelines/{created['id']}").status_code == 204
    assert create(client, doc("again"))["slug"] == "again"


# ---- system pipelines and clone ------------------------------------------------------------


def test_is_system_cannot_be_set_through_the_api(stack):
    client = stack.account().client
    refused = client.post("/pipelines", json=doc("sneaky", is_system=True))
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "is_system"]
    created = create(client, doc("plain"))
    patched = client.patch(f"/pipelines/{created['id']}", json={"is_system": True})
    assert patched.status_code == 422
    assert patched.json()["detail"][0]["loc"] == ["body", "is_system"]
    assert client.get(f"/pipelines/{created['id']}").json()["is_system"] is False


def test_system_pipeline_cannot_be_changed_or_deleted(stack):
    client = stack.account().client
    created = create(client, doc("system-one", description="built in"))
    make_system(stack, created["id"])
    for response in (client.put(f"/pipelines/{created['id']}", json=doc("renamed")),
                     client.patch(f"/pipelines/{created['id']}", json={"is_active": False}),
                     client.delete(f"/pipelines/{created['id']}")):
        assert response.status_code == 409, response.text
        assert "system pipeline" in response.json()["detail"]
    after = client.get(f"/pipelines/{created['id']}").json()
    assert (after["name"], after["is_active"], after["is_system"]) == ("system-one", True, True)


def test_system_pipeline_can_be_cloned_and_the_copy_is_editable(stack):
    client = stack.account().client
    created = create(client, doc("system-two", description="built in", steps=[step("a"), step("b")]))
    make_system(stack, created["id"])
    response = client.post(f"/pipelines/{created['id']}/clone")
    assert response.status_code == 201, response.text
    copy = response.json()
    assert copy["id"] != created["id"]
    assert (copy["name"], copy["slug"], copy["is_system"]) == ("system-two (copy)", "system-two-copy", False)
    assert copy["description"] == "built in"
    assert [s["id"] for s in copy["steps"]] == ["a", "b"]
    assert client.patch(f"/pipelines/{copy['id']}", json={"description": "mine"}).json()["description"] == "mine"
    assert client.delete(f"/pipelines/{copy['id']}").status_code == 204


def test_clone_slugs_are_copy_then_copy_2(stack):
    client = stack.account().client
    created = create(client, doc("source"))
    first = client.post(f"/pipelines/{created['id']}/clone").json()
    second = client.post(f"/pipelines/{created['id']}/clone").json()
    assert (first["slug"], second["slug"]) == ("source-copy", "source-copy-2")
    named = client.post(f"/pipelines/{created['id']}/clone", json={"name": "Mine", "slug": "mine"}).json()
    assert (named["name"], named["slug"]) == ("Mine", "mine")
    assert pipeline_count(client) == 4


def test_clone_with_a_taken_slug_is_409_naming_slug(stack):
    client = stack.account().client
    created = create(client, doc("source"))
    response = client.post(f"/pipelines/{created['id']}/clone", json={"slug": "source"})
    assert response.status_code == 409
    assert response.json()["detail"][0]["loc"] == ["body", "slug"]
    assert pipeline_count(client) == 1


def test_duplicate_slug_is_409_naming_slug_and_creates_nothing(stack):
    client = stack.account().client
    create(client, doc("taken"))
    response = client.post("/pipelines", json=doc("Taken"))
    assert response.status_code == 409
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "slug"]
    assert "slug 'taken' is already used" in error["msg"]
    assert pipeline_count(client) == 1


def test_put_to_another_pipelines_slug_is_409_and_changes_nothing(stack):
    client = stack.account().client
    create(client, doc("first"))
    second = create(client, doc("second"))
    response = client.put(f"/pipelines/{second['id']}", json=doc("x", slug="first"))
    assert response.status_code == 409
    assert response.json()["detail"][0]["loc"] == ["body", "slug"]
    assert client.get(f"/pipelines/{second['id']}").json() == second


def test_the_same_slug_may_exist_in_two_accounts(stack):
    assert create(stack.account().client, doc("shared"))["slug"] == "shared"
    assert create(stack.account().client, doc("shared"))["slug"] == "shared"


# ---- 422: the document is refused naming the field, and nothing is saved ------------------

INVALID_DOCUMENTS: list[tuple[str, dict[str, Any], list[Any], str]] = [
    ("unknown_step_type", doc(steps=[step(type="teleport")]), ["steps", 0, "type"], "unknown step type 'teleport'"),
    ("duplicate_step_id", doc(steps=[step("a"), step("a")]), ["steps", 1, "id"], "duplicate step id 'a'"),
    ("expression_syntax", doc(inputs={"x": {}}, steps=[step(**{"if": "${{ inputs.x == }}"})]),
     ["steps", 0, "if"], "invalid expression"),
    ("reference_to_missing_step", doc(steps=[env_step("a", "${{ steps.ghost.outputs.y }}")]),
     ["steps", 0, "with", "env", "X"], "step 'ghost' does not exist"),
    ("reference_to_later_step", doc(steps=[env_step("a", "${{ steps.b.outputs.y }}"), step("b")]),
     ["steps", 0, "with", "env", "X"], "step 'b' does not exist or does not come before this step"),
    ("reference_to_undeclared_input", doc(steps=[env_step("a", "${{ inputs.nope }}")]),
     ["steps", 0, "with", "env", "X"], "input 'nope' is not declared"),
    ("expression_in_command", doc(inputs={"x": {}}, steps=[step(**{"with": {"command": "echo ${{ inputs.x }}"}})]),
     ["steps", 0, "with", "command"], "expressions are not allowed in shell text"),
    ("bad_cron", doc(triggers={"schedule": {"cron": "0 25 * * *"}}), ["triggers", "schedule", "cron"],
     "'0 25 * * *' is not a valid 5-field cron expression"),
    ("unknown_time_zone", doc(triggers={"schedule": {"cron": "0 3 * * *", "timezone": "Europe/Atlantis"}}),
     ["triggers", "schedule", "timezone"], "unknown time zone 'Europe/Atlantis'"),
    ("timeout_zero", doc(timeout_minutes=0), ["timeout_minutes"], "greater than or equal to 1"),
    ("timeout_361", doc(timeout_minutes=361), ["timeout_minutes"], "less than or equal to 360"),
    ("unknown_top_level_field", doc(colour="red"), ["colour"], "Extra inputs are not permitted"),
    ("empty_steps", doc(steps=[]), ["steps"], "at least 1 item"),
    ("invalid_step_id", doc(steps=[step("bad id!")]), ["steps", 0, "id"], "should match pattern"),
]


@pytest.mark.parametrize(("document", "loc", "fragment"), [c[1:] for c in INVALID_DOCUMENTS],
                         ids=[c[0] for c in INVALID_DOCUMENTS])
def test_invalid_document_is_422_naming_the_field_and_creates_nothing(stack, document, loc, fragment):
    client = stack.account().client
    create(client, doc("existing"))
    response = client.post("/pipelines", json=document)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == ["body", *loc] and fragment in e["msg"] for e in errors), errors
    assert all("input" not in e for e in errors)  # the document is not echoed back
    assert pipeline_count(client) == 1


def test_a_body_that_is_not_a_mapping_is_422(stack):
    client = stack.account().client
    response = client.post("/pipelines", json=["name", "steps"])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert pipeline_count(client) == 0


def test_invalid_put_is_422_and_keeps_the_old_definition(stack):
    client = stack.account().client
    created = create(client, doc("kept"))
    response = client.put(f"/pipelines/{created['id']}", json=doc("kept", steps=[step(type="teleport")]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "steps", 0, "type"]
    assert client.get(f"/pipelines/{created['id']}").json() == created


# ---- trigger inputs ------------------------------------------------------------------------

TYPED_INPUTS = {
    "name": {"type": "string", "required": True},
    "count": {"type": "number", "default": 1},
    "target": {"type": "choice", "options": ["staging", "production"], "default": "staging"},
}


@pytest.mark.parametrize(("inputs", "name", "fragment"), [
    ({"name": "x", "colour": "red"}, "colour", "unknown input 'colour'; declared inputs: name, count, target"),
    ({"name": "x", "count": "abc"}, "count", "expected a number, got 'abc'"),
    ({"count": 2}, "name", "this input is required"),
    ({"name": "x", "target": "moon"}, "target", "must be one of: staging, production"),
], ids=["unknown_input", "wrong_type", "missing_required", "choice_outside_options"])
def test_bad_trigger_inputs_are_422_naming_the_input_and_create_no_run(stack, inputs, name, fragment):
    client = stack.account().client
    pipeline = create(client, doc("typed", inputs=TYPED_INPUTS))
    response = client.post(f"/pipelines/{pipeline['id']}/trigger", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", "inputs", name]]
    assert fragment in errors[0]["msg"], errors
    assert run_count(client) == 0
    assert client.get(f"/pipelines/{pipeline['id']}").json()["last_run_number"] == 0


def test_trigger_inputs_are_typed_and_defaults_applied(stack):
    client = stack.account().client
    pipeline = create(client, doc("typed", inputs=TYPED_INPUTS))
    response = client.post(f"/pipelines/{pipeline['id']}/trigger",
                           json={"inputs": {"name": "svc", "count": "3"}, "context": {"reason": "test"}})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["inputs"] == {"name": "svc", "count": 3, "target": "staging"}
    assert run["trigger_type"] == "manual"
    assert run["trigger_context"] == {"reason": "test"}


def test_trigger_with_an_unknown_body_field_is_422(stack):
    client = stack.account().client
    pipeline = create(client, doc("p"))
    response = client.post(f"/pipelines/{pipeline['id']}/trigger", json={"input": {}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input"]
    assert run_count(client) == 0


# ---- import and export ---------------------------------------------------------------------

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

YAML = {"Content-Type": "application/yaml"}


def import_yaml(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/pipelines/import", content=text.encode(), headers=YAML)


def test_yaml_import_of_the_issue_example_creates_the_pipeline(stack):
    client = stack.account().client
    response = import_yaml(client, ISSUE_EXAMPLE_YAML)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["slug"], body["pipeline_type"]) == ("build-and-test", "build-and-test", "custom")
    assert (body["allow_concurrent"], body["timeout_minutes"], body["runner_labels"]) == (False, 30, [])
    assert body["inputs"] == {"greeting": {"type": "string", "description": "", "required": False,
                                           "default": "hello"}}
    assert body["triggers"] == {"manual": {}, "push": {"branches": ["main", "release/*"]},
                                "schedule": {"cron": "0 3 * * *", "timezone": "UTC", "inputs": {}}}
    hello, check = body["steps"]
    assert (hello["id"], hello["name"], hello["type"]) == ("hello", "Say hello", "run_tests")
    assert hello["with"] == {"command": 'echo "result=$GREETING" >> "$DEVOPS_OUTPUT"',
                             "env": {"GREETING": "${{ inputs.greeting }}"}}
    assert (check["if"], check["timeout_minutes"], check["retry"]["max_attempts"]) == (
        "${{ steps.hello.outputs.result == 'hello' }}", 5, 2)
    assert pipeline_count(client) == 1


def test_export_then_import_elsewhere_is_lossless(stack):
    first, second = stack.account().client, stack.account().client
    source = import_yaml(first, ISSUE_EXAMPLE_YAML).json()

    exported = first.get(f"/pipelines/{source['id']}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    exported_json = first.get(f"/pipelines/{source['id']}/export", params={"format": "json"})
    assert exported_json.headers["content-type"].startswith("application/json")
    assert exported_json.json()["steps"][0]["with"]["env"] == {"GREETING": "${{ inputs.greeting }}"}

    copy = import_yaml(second, exported.text)
    assert copy.status_code == 201, copy.text
    assert yaml.safe_load(exported.text) == exported_json.json()
    again = second.get(f"/pipelines/{copy.json()['id']}/export")
    assert again.content == exported.content
    assert second.get(f"/pipelines/{copy.json()['id']}/export", params={"format": "json"}).json() == \
        exported_json.json()

    def definition(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in ("id", "created_at", "updated_at")}

    assert definition(copy.json()) == definition(source)


def test_json_export_can_be_imported_as_json(stack):
    first, second = stack.account().client, stack.account().client
    source = import_yaml(first, ISSUE_EXAMPLE_YAML).json()
    exported = first.get(f"/pipelines/{source['id']}/export", params={"format": "json"})
    response = second.post("/pipelines/import", content=exported.content,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert second.get(f"/pipelines/{response.json()['id']}/export", params={"format": "json"}).json() == \
        exported.json()


def test_import_of_an_unsupported_content_type_is_415(stack):
    client = stack.account().client
    response = client.post("/pipelines/import", content=b"<pipeline/>", headers={"Content-Type": "application/xml"})
    assert response.status_code == 415
    assert "application/yaml or application/json" in response.json()["detail"]
    assert pipeline_count(client) == 0


def test_import_of_invalid_yaml_is_422_naming_the_line(stack):
    client = stack.account().client
    response = import_yaml(client, "name: broken\nsteps:\n  - id: a\n    type: [run_tests\n")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"]
    assert error["msg"].startswith("invalid YAML at line 5")
    assert pipeline_count(client) == 0


def test_import_of_invalid_json_is_422_naming_the_line(stack):
    client = stack.account().client
    response = client.post("/pipelines/import", content=b'{\n"name": "x",\n}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("invalid JSON at line 3")
    assert pipeline_count(client) == 0


def test_import_of_an_invalid_document_is_422_naming_the_field(stack):
    client = stack.account().client
    response = import_yaml(client, ISSUE_EXAMPLE_YAML.replace("type: run_tests\n    if:", "type: teleport\n    if:"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "steps", 1, "type"]
    assert pipeline_count(client) == 0


def test_import_of_a_yaml_list_is_422(stack):
    client = stack.account().client
    response = import_yaml(client, "- name: x\n")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert "must be a mapping" in response.json()["detail"][0]["msg"]


def test_import_with_a_taken_slug_is_409(stack):
    client = stack.account().client
    assert import_yaml(client, ISSUE_EXAMPLE_YAML).status_code == 201
    response = import_yaml(client, ISSUE_EXAMPLE_YAML)
    assert response.status_code == 409
    assert response.json()["detail"][0]["loc"] == ["body", "slug"]
    assert pipeline_count(client) == 1


def test_export_writes_keys_in_document_order_on_every_backend(stack):
    client = stack.account().client
    source = import_yaml(client, ISSUE_EXAMPLE_YAML).json()
    exported = yaml.safe_load(client.get(f"/pipelines/{source['id']}/export").text)
    assert list(exported) == ["name", "slug", "description", "pipeline_type", "allow_concurrent", "timeout_minutes",
                              "runner_labels", "features", "is_active", "inputs", "env", "triggers", "steps"]
    assert list(exported["inputs"]["greeting"]) == ["type", "description", "required", "default"]
    assert list(exported["triggers"]) == ["manual", "push", "schedule"]
    assert list(exported["triggers"]["schedule"]) == ["cron", "timezone", "inputs"]
    assert list(exported["steps"][1]) == ["id", "name", "type", "if", "continue_on_error", "timeout_minutes",
                                          "retry", "with"]
    assert exported["steps"][1]["retry"] == {"max_attempts": 2, "delay_seconds": 0.0}


def test_openapi_documents_the_document_routes_with_examples(stack):
    spec = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    paths = spec["paths"]
    create_body = paths["/api/v1/devops/pipelines"]["post"]["requestBody"]["content"]["application/json"]
    assert create_body["schema"]["examples"][0]["name"] == "build-and-test"
    import_body = paths["/api/v1/devops/pipelines/import"]["post"]["requestBody"]["content"]
    assert yaml.safe_load(import_body["application/yaml"]["example"])["name"] == "build-and-test"
    assert import_body["application/json"]["example"]["steps"][0]["id"] == "hello"
    assert "/api/v1/devops/pipeline_runs/{run_id}/retry" in paths
    assert "/health" in paths


RICH_DOCUMENT: dict[str, Any] = {
    "name": "Déploiement — prod",
    "slug": "deploy-prod",
    "description": "multi-line\ndescription with ünïcode",
    "pipeline_type": "deploy",
    "allow_concurrent": False,
    "timeout_minutes": 120,
    "runner_labels": ["linux", "docker"],
    "features": {"cache": {"enabled": True, "paths": ["~/.cache"]}, "z": 1, "a": None},
    "is_active": False,
    "inputs": {
        "target": {"type": "choice", "options": ["staging", "production"], "default": "staging",
                   "description": "where to"},
        "replicas": {"type": "number", "default": 2},
        "dry_run": {"type": "boolean", "required": True},
    },
    "env": {"ZONE": "eu", "TARGET": "${{ inputs.target }}"},
    "triggers": {
        "workflow_dispatch": {},
        "pull_request": {"types": ["opened", "synchronize"], "branches": ["main"], "paths_ignore": ["docs/**"]},
        "issue_comment": {"command_prefix": "/deploy"},
        "release": {"types": ["published"]},
        "schedule": {"cron": "*/15 9-17 * * 1-5", "timezone": "Europe/Paris", "inputs": {"dry_run": True}},
    },
    "steps": [
        {"id": "build", "name": "Build it", "type": "run_tests", "continue_on_error": True,
         "retry": {"max_attempts": 3, "delay_seconds": 2.5},
         "with": {"command": "set -e\necho building\nmake all\n", "junit": "reports/junit.xml",
                  "env": {"LEVEL": "${{ format('{0}-{1}', inputs.target, inputs.replicas) }}"}}},
        {"id": "approve", "type": "custom", "requires_approval": True,
         "with": {"handler": "noop"}},
        {"id": "gate", "type": "code_factory_gate", "if": "${{ success() && inputs.dry_run == false }}",
         "requires_approval": True,
         "approval": {"timeout_minutes": 60, "recipients": ["ops@example.test"], "require_comment": True},
         "with": {"note": "${{ steps.build.outputs.version }}"}},
        {"id": "notify", "type": "notify", "timeout_minutes": 1,
         "if": "always()", "with": {"url": "http://127.0.0.1:9/hook", "payload": {"list": [1, "two", None]}}},
    ],
}


def test_a_document_using_every_field_round_trips_losslessly(stack):
    first, second = stack.account().client, stack.account().client
    created = create(first, RICH_DOCUMENT)
    exported = first.get(f"/pipelines/{created['id']}/export")
    as_json = first.get(f"/pipelines/{created['id']}/export", params={"format": "json"}).json()
    assert as_json["inputs"]["target"]["options"] == ["staging", "production"]
    assert as_json["steps"][1]["approval"]["timeout_minutes"] == 1440
    assert as_json["steps"][2]["approval"]["recipients"] == ["ops@example.test"]
    assert as_json["steps"][0]["retry"] == {"max_attempts": 3, "delay_seconds": 2.5}
    assert as_json["steps"][0]["with"]["command"] == "set -e\necho building\nmake all\n"
    assert as_json["description"] == RICH_DOCUMENT["description"]
    assert as_json["triggers"]["schedule"]["timezone"] == "Europe/Paris"

    copy = import_yaml(second, exported.text)
    assert copy.status_code == 201, copy.text
    again = second.get(f"/pipelines/{copy.json()['id']}/export")
    assert again.content == exported.content
    assert second.get(f"/pipelines/{copy.json()['id']}/export", params={"format": "json"}).json() == as_json
    # and the JSON form imports to the same thing
    third = stack.account().client
    from_json = third.post("/pipelines/import", json=as_json)
    assert from_json.status_code == 201, from_json.text
    assert third.get(f"/pipelines/{from_json.json()['id']}/export").content == exported.content


def test_export_keeps_the_authors_key_order_inside_maps_on_every_backend(stack):
    acct = stack.account()
    doc = {
        "name": "ordered",
        "inputs": {"zeta": {"type": "string"}, "alpha": {"type": "string"}, "mid": {"type": "string"}},
        "env": {"Z_VAR": "1", "A_VAR": "2"},
        "steps": [{"id": "s", "type": "run_tests",
                   "with": {"env": {"Y": "1", "B": "2"}, "command": "true", "junit": "r.xml"}}],
    }
    pid = acct.client.post("/pipelines", json=doc).json()["id"]
    exported = acct.client.get(f"/pipelines/{pid}/export", params={"format": "json"}).json()
    assert list(exported["inputs"]) == ["zeta", "alpha", "mid"]
    assert list(exported["env"]) == ["Z_VAR", "A_VAR"]
    assert list(exported["steps"][0]["with"]) == ["env", "command", "junit"]
    assert list(exported["steps"][0]["with"]["env"]) == ["Y", "B"]
