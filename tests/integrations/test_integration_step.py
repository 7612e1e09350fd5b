"""The ``integration`` step: a pipeline runs an instance as a child IntegrationExecutionWorkflow
and a later step reads its outputs; an unknown instance or bad inputs fail the step clearly."""

from __future__ import annotations

import json

import pytest

from tests.harness import wait_run
from tests.integrations.helpers import create_credential, create_template, install, unique
from tests.integrations.receivers import Answer, Receiver
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id, trigger

SECRET = "step-secret-never-in-history-93b1"


@pytest.fixture
def receiver():
    server = Receiver(Answer(200, {"build": {"id": "b-77"}}))
    yield server
    server.close()


def integration_step(step_id: str, instance: str, inputs: dict, **extra) -> dict:
    return {"id": step_id, "type": "integration", "with": {"instance": instance, "inputs": inputs}, **extra}


def test_an_integration_step_passes_its_outputs_to_a_later_step(stack, receiver):
    acct = stack.account()
    client = acct.client
    template = create_template(client, "webhook", credential_requirements=[{"name": "signing_secret"}])
    credential = create_credential(client, {"signing_secret": SECRET})
    name = unique("ci-hook")
    install(client, template["id"], {"url": receiver.url, "response_mapping": {"build_id": "$.build.id"}},
            credential["id"], name=name)
    pid = create_pipeline(acct, inputs={"ref": {"type": "string", "default": "main"}}, steps=[
        integration_step("hook", name, {"ref": "${{ inputs.ref }}", "run": "${{ run.number }}"}),
        sh("use", 'test "$B" = "b-77" && echo "seen=$B" >> "$DEVOPS_OUTPUT"',
           env={"B": "${{ steps.hook.outputs.build_id }}"}),
    ])
    run = wait_run(client, trigger(acct, pid)["id"])
    assert run["status"] == "success", run
    steps = steps_by_id(run)
    assert steps["use"]["outputs"] == {"seen": "b-77"}
    execution_id = steps["hook"]["outputs"]["execution_id"]
    assert steps["hook"]["outputs"]["build_id"] == "b-77" and steps["hook"]["outputs"]["status_code"] == 200
    execution = client.get(f"/integration_executions/{execution_id}").json()
    assert execution["trigger_type"] == "pipeline" and execution["run_id"] == run["id"]
    assert execution["step_id"] == "hook" and execution["status"] == "success"
    assert json.loads(receiver.requests[0].body) == {"ref": "main", "run": 1}  # a whole expression keeps its type
    listed = client.get("/integration_executions", params={"run_id": run["id"]}).json()
    assert [e["id"] for e in listed["data"]] == [execution_id]
    for workflow_id in (f"run-{run['id']}", execution["workflow_id"]):
        history = stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).fetch_history()).to_json()
        assert SECRET not in history


def test_an_unknown_instance_or_bad_inputs_fail_the_step_with_the_reason(stack):
    acct = stack.account()
    template = create_template(acct.client, "custom", default_configuration={"handler": "echo"},
                               input_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    name = unique("echo")
    install(acct.client, template["id"], name=name)
    pid = create_pipeline(acct, steps=[
        integration_step("missing", "no-such-instance", {}, continue_on_error=True),
        integration_step("bad", name, {"n": "x"}, continue_on_error=True),
        integration_step("good", name, {"n": 4}),
    ])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    steps = steps_by_id(run)
    assert steps["missing"]["status"] == "failure"
    assert "integration instance 'no-such-instance' not found" in steps["missing"]["error"]
    assert steps["bad"]["status"] == "failure" and "/n" in steps["bad"]["error"]
    assert steps["good"]["status"] == "success" and steps["good"]["outputs"]["n"] == 4
    assert run["status"] == "success"


def test_a_failed_execution_fails_the_step_with_its_error(stack):
    acct = stack.account()
    template = create_template(acct.client, "custom")
    name = unique("broken")
    install(acct.client, template["id"], {"handler": "not-registered"}, name=name)
    pid = create_pipeline(acct, steps=[integration_step("call", name, {})])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "failure"
    error = steps_by_id(run)["call"]["error"]
    assert "failed" in error and "'not-registered' is not registered" in error


def test_a_step_without_an_instance_is_refused_on_save(stack):
    acct = stack.account()
    response = acct.client.post("/pipelines", json={"name": unique("p"), "steps": [
        {"id": "call", "type": "integration", "with": {"inputs": {}}}]})
    assert response.status_code == 422
    assert any(p["loc"][-1] == "instance" for p in response.json()["detail"]), response.json()
