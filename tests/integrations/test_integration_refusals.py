"""Refusals that need no running stack: private targets when they are not allowed, non-http URLs,
a bad JSONPath, and a start Temporal refuses (the execution is failed with the reason)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from adapters.integrations.base import ExecutorCall, IntegrationFailed
from adapters.integrations.rest_api import RestApiExecutor
from adapters.integrations.webhook import WebhookExecutor
from adapters.temporal import TemporalGateway
from db.integration_models import IntegrationInstance
from domain.errors import Unavailable
from services import audit, integration_outbox
from services import integration_executions as executions
from services.integration_workflows import start_workflow
from tests.integrations.helpers import create_template, install, wait_execution
from tests.integrations.receivers import Receiver


def call(settings, configuration, inputs=None, credentials=None) -> ExecutorCall:
    return ExecutorCall(account_id=1, execution_id=1, integration_type="webhook", configuration=configuration,
                        credentials=credentials or {}, inputs=inputs or {}, settings=settings)


def strict(stack):
    return stack.settings.model_copy(update={"allow_private_targets": False, "notify_allow_private_targets": False})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_private_target_is_refused_when_private_targets_are_not_allowed(stack):
    receiver = Receiver()
    try:
        with pytest.raises(IntegrationFailed, match="loopback|private|internal"):
            asyncio.run(WebhookExecutor().start(call(strict(stack), {"url": receiver.url})))
        with pytest.raises(IntegrationFailed, match="loopback|private|internal"):
            asyncio.run(RestApiExecutor().start(call(strict(stack), {"url": "http://{{ inputs.host }}/x"},
                                                     {"host": "10.0.0.8"})))
        assert receiver.requests == []
        # allowed by the (test) settings: the same call goes through
        outcome = asyncio.run(WebhookExecutor().start(call(stack.settings, {"url": receiver.url})))
        assert outcome.outputs["status_code"] == 200 and len(receiver.requests) == 1
    finally:
        receiver.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_non_http_urls_bad_templates_and_bad_jsonpath_fail_clearly(stack):
    with pytest.raises(IntegrationFailed, match="http\\(s\\) URL"):
        asyncio.run(WebhookExecutor().start(call(stack.settings, {"url": "file:///etc/passwd"})))
    with pytest.raises(IntegrationFailed, match="url"):
        asyncio.run(RestApiExecutor().start(call(stack.settings, {"url": "{{ inputs.missing.x }}"})))
    with pytest.raises(IntegrationFailed, match="not a valid JSONPath"):
        receiver = Receiver()
        try:
            asyncio.run(RestApiExecutor().start(call(stack.settings, {"url": receiver.url, "outputs": {"x": "$["}})))
        finally:
            receiver.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_start_temporal_refuses_fails_the_execution_with_the_reason(stack):
    client = stack.account().client
    instance = install(client, create_template(client, "custom", default_configuration={"handler": "echo"})["id"])
    refusing = TemporalGateway(stack.settings.model_copy(update={"task_queue": ""}), stack.temporal)
    with stack.sessions() as session:
        account_id = session.get(IntegrationInstance, instance["id"]).account_id
        row = executions.create_execution(session, account_id, audit.SYSTEM, instance["id"], {})

        async def attempt() -> None:
            await anyio.to_thread.run_sync(start_workflow, session, refusing, stack.settings, row)

        with pytest.raises(Unavailable):
            stack.infra.run(attempt())
    shown = client.get(f"/integration_executions/{row.id}").json()
    assert shown["status"] == "failure" and "could not be started" in shown["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_execution_left_pending_by_a_dead_api_is_started_by_the_outbox(stack):
    client = stack.account().client
    instance = install(client, create_template(client, "custom", default_configuration={"handler": "echo"})["id"])
    with stack.sessions() as session:
        account_id = session.get(IntegrationInstance, instance["id"]).account_id
        # what a request killed between its commit and the workflow start leaves behind
        row = executions.create_execution(session, account_id, audit.SYSTEM, instance["id"], {"n": 1})
        row.created_at = datetime.now(UTC) - timedelta(seconds=stack.settings.run_outbox_grace_seconds + 5)
        session.commit()
        execution_id = row.id
    gateway = TemporalGateway(stack.settings, stack.temporal)
    # (the API's own outbox loop may have got there first: either way it is started once)
    stack.infra.run(integration_outbox.reconcile_once(gateway, stack.sessions, stack.settings))
    done = wait_execution(client, execution_id)
    assert done["status"] == "success" and done["output"] == {"n": 1}
    # a second pass never runs it again
    assert execution_id not in stack.infra.run(integration_outbox.reconcile_once(gateway, stack.sessions,
                                                                                 stack.settings))
