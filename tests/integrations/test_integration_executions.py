"""Integration executions end to end: the API starts ``IntegrationExecutionWorkflow`` on the real
Temporal dev server, the worker's executors talk real HTTP to receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pytest

from adapters.integrations.base import ExecutorCall
from adapters.integrations.custom import register_integration_handler
from tests.harness import wait_for
from tests.integrations.helpers import create_credential, create_template, execute, install, wait_execution
from tests.integrations.receivers import Answer, Receiver, closed_port_url

SECRET = "whsec-never-in-history-4f9a2c"
TOKEN = "tok-never-in-history-77e1d0"


@register_integration_handler("test_ticket")
async def ticket(call: ExecutorCall) -> dict[str, Any]:
    return {"ticket": f"T-{call.inputs['n']}", "has_token": bool(call.credentials.get("token"))}


@register_integration_handler("test_block")
async def block(call: ExecutorCall) -> dict[str, Any]:
    await asyncio.sleep(60)  # until the cancel reaches the activity
    return {}


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def history_json(stack, workflow_id: str) -> str:
    history = stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).fetch_history())
    return history.to_json()


def test_a_webhook_posts_signed_inputs_and_maps_the_response(stack, receiver):
    receiver.answers = [Answer(200, {"id": "evt-9", "items": [{"n": 1}, {"n": 2}]})]
    client = stack.account().client
    template = create_template(client, "webhook", credential_requirements=[{"name": "signing_secret"}],
                               output_schema={"type": "object", "required": ["event_id"]},
                               default_configuration={"method": "POST"})
    credential = create_credential(client, {"signing_secret": SECRET})
    instance = install(client, template["id"], {"url": f"{receiver.url}/hook", "headers": {"X-Team": "ops"},
                                                "response_mapping": {"event_id": "$.id", "ns": "$.items[*].n"}},
                       credential["id"])
    done = execute(client, instance["id"], {"text": "deployed", "n": 3})
    done = done if done["status"] == "success" else wait_execution(client, done["id"])
    assert done["status"] == "success", done
    assert done["output"]["event_id"] == "evt-9" and done["output"]["ns"] == [1, 2]
    assert done["output"]["status_code"] == 200 and done["attempts"] == 1 and done["duration_ms"] >= 0
    [request] = receiver.requests
    assert json.loads(request.body) == {"text": "deployed", "n": 3}
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-devops-signature-256"], expected)
    assert request.headers["x-devops-event"] == "integration.execute"
    assert request.headers["x-devops-delivery"] == f"integration-execution-{done['id']}"
    assert request.headers["x-team"] == "ops"
    shown = client.get(f"/integration_instances/{instance['id']}").json()
    assert (shown["execution_count"], shown["success_count"], shown["failure_count"]) == (1, 1, 0)
    assert shown["last_executed_at"]
    assert client.get(f"/integration_templates/{template['id']}").json()["usage_count"] == 1
    # the signing secret is in no answer, audit event or Temporal history
    history = history_json(stack, done["workflow_id"])
    assert SECRET not in history and "signing_secret" not in history
    assert SECRET not in client.get("/audit_events", params={"limit": 200}).text
    assert SECRET not in client.get(f"/integration_executions/{done['id']}").text


def test_rest_api_renders_url_headers_and_body_and_reads_outputs_by_jsonpath(stack, receiver):
    # the far side echoes the token back: it must not reach the output, the database or the history
    receiver.answers = [Answer(201, {"data": {"id": 42, "tags": ["a", "b"]}, "echo": f"Bearer {TOKEN}"})]
    client = stack.account().client
    template = create_template(client, "rest_api", credential_requirements=[{"name": "token"}],
                               default_configuration={"method": "POST", "success_status": [201]})
    credential = create_credential(client, {"token": TOKEN})
    instance = install(client, template["id"], {
        "url": receiver.url + "/repos/{{ inputs.repo }}/issues",
        "headers": {"Authorization": "Bearer {{ credentials.token }}"},
        "query": {"label": "{{ inputs.label | upper }}"},
        "body": {"title": "{{ inputs.title }}", "count": 3},
        "outputs": {"issue_id": "$.data.id", "first_tag": "$.data.tags[0]"}}, credential["id"])
    done = execute(client, instance["id"], {"repo": "acme/web", "label": "bug", "title": "Broken build"})
    done = done if done["status"] == "success" else wait_execution(client, done["id"])
    assert done["status"] == "success", done
    assert done["output"]["issue_id"] == 42 and done["output"]["first_tag"] == "a"
    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/repos/acme/web/issues"
    assert request.query == {"label": ["BUG"]}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.body) == {"title": "Broken build", "count": 3}
    assert done["output"]["body"]["echo"] == "Bearer ***"
    assert TOKEN not in history_json(stack, done["workflow_id"])
    assert TOKEN not in client.get(f"/integration_executions/{done['id']}").text


def test_a_custom_handler_runs_and_an_unknown_one_fails_listing_the_registered(stack):
    client = stack.account().client
    template = create_template(client, "custom", input_schema={"type": "object", "required": ["n"]})
    credential = create_credential(client, {"token": TOKEN})
    instance = install(client, template["id"], {"handler": "test_ticket"}, credential["id"])
    done = wait_execution(client, execute(client, instance["id"], {"n": 5})["id"])
    assert done["status"] == "success" and done["output"] == {"ticket": "T-5", "has_token": True}
    unknown = install(client, template["id"], {"handler": "nope"})
    failed = wait_execution(client, execute(client, unknown["id"], {"n": 1})["id"])
    assert failed["status"] == "failure"
    assert "'nope' is not registered" in failed["error"] and "test_ticket" in failed["error"]


def test_a_receiver_failing_twice_is_retried_and_the_attempts_are_recorded(stack, receiver):
    # Retry-After is honoured (1 s here instead of the backoff's 1 s then 2 s)
    busy = Answer(503, "busy", {"Retry-After": "1"})
    receiver.answers = [busy, busy, Answer(200, {"ok": True})]
    client = stack.account().client
    instance = install(client, create_template(client, "webhook")["id"], {"url": receiver.url})
    done = wait_execution(client, execute(client, instance["id"], {"x": 1}, wait=0)["id"])
    assert done["status"] == "success", done
    assert done["attempts"] == 3 and len(receiver.requests) == 3
    # every try is the same delivery, so the receiver can drop duplicates
    assert {r.headers["x-devops-delivery"] for r in receiver.requests} == {f"integration-execution-{done['id']}"}


def test_a_receiver_that_is_always_down_fails_the_execution_with_the_reason(stack):
    client = stack.account().client
    instance = install(client, create_template(client, "webhook")["id"], {"url": closed_port_url()})
    done = wait_execution(client, execute(client, instance["id"], wait=0)["id"], timeout=60)
    assert done["status"] == "failure" and done["attempts"] == 4
    assert "the webhook unreachable (ConnectError)" in done["error"]
    assert client.get(f"/integration_instances/{instance['id']}").json()["failure_count"] == 1


def test_a_4xx_answer_fails_at_once_with_the_status(stack, receiver):
    receiver.answers = [Answer(403, "forbidden")]
    client = stack.account().client
    instance = install(client, create_template(client, "webhook")["id"], {"url": receiver.url})
    done = wait_execution(client, execute(client, instance["id"])["id"])
    assert done["status"] == "failure" and "HTTP 403" in done["error"] and done["attempts"] == 1


def test_outputs_that_break_the_output_schema_fail_naming_the_pointer(stack, receiver):
    receiver.answers = [Answer(200, {"count": "many"})]
    client = stack.account().client
    template = create_template(client, "webhook", output_schema={
        "type": "object", "properties": {"count": {"type": "integer"}}})
    instance = install(client, template["id"], {"url": receiver.url, "response_mapping": {"count": "$.count"}})
    done = wait_execution(client, execute(client, instance["id"])["id"])
    assert done["status"] == "failure"
    assert "output_schema" in done["error"] and "/count" in done["error"]


def test_cancel_stops_a_running_execution(stack):
    client = stack.account().client
    instance = install(client, create_template(client, "custom")["id"], {"handler": "test_block"})
    started = execute(client, instance["id"], wait=0)
    wait_for(lambda: client.get(f"/integration_executions/{started['id']}").json()["status"] == "running",
             message="the execution to run")
    cancelled = client.post(f"/integration_executions/{started['id']}/cancel")
    assert cancelled.status_code == 202
    done = wait_execution(client, started["id"])
    assert done["status"] == "cancelled" and done["finished_at"]
    again = client.post(f"/integration_executions/{started['id']}/cancel")
    assert again.status_code == 409
    actions = {e["action"] for e in client.get("/audit_events", params={"limit": 200}).json()["data"]}
    assert {"integration_execution.started", "integration_execution.cancelled"} <= actions
