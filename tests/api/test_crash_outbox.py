"""Issue 11 item 1: run creation survives a ``kill -9`` of the API.

The API writes the run row and then starts its workflow; killed in between, the row stayed
``pending``/``queued`` forever. Now the row is the start outbox (``workflow_started_at`` NULL) and
the API's reconciler (services.run_outbox) starts it at the next API start, or fails it with a reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from db.models import Pipeline, PipelineRun, RunEvent
from services import run_outbox
from services import runs as services
from tests.harness import FINISHED, REPO, ApiServer, Stack, free_port, make_settings, wait_for, wait_run

BURST = 50


def api_process(stack: Stack, log_path: Path, port: int) -> subprocess.Popen[bytes]:
    """``uvicorn api.main:app`` as its own process, on the stack's database, Temporal and task
    queue (so the stack's worker runs what it starts), with a short outbox period."""
    settings = stack.settings
    env = {**os.environ, "DEVOPS_ENVIRONMENT": settings.environment, "DEVOPS_DATABASE_URL": settings.database_url,
           "DEVOPS_DATA_DIR": str(settings.data_dir), "DEVOPS_TEMPORAL_ADDRESS": settings.temporal_address,
           "DEVOPS_TEMPORAL_NAMESPACE": settings.temporal_namespace, "DEVOPS_TASK_QUEUE": settings.task_queue,
           "DEVOPS_SECRET_KEY": settings.secret_key, "DEVOPS_SHELL_EXECUTOR": "true",
           "DEVOPS_ENGINE_ALLOWLIST": ",".join(settings.engine_allowlist),
           "DEVOPS_STEP_HEARTBEAT_TIMEOUT_SECONDS": str(settings.step_heartbeat_timeout_seconds),
           "DEVOPS_AUTH_FAILURE_LIMIT": "1000000", "DEVOPS_SCHEDULE_RECONCILE_ON_START": "false",
           "DEVOPS_RUN_OUTBOX_INTERVAL_SECONDS": "1", "DEVOPS_RUN_OUTBOX_GRACE_SECONDS": "2"}
    if settings.workspace_dir:
        env["DEVOPS_WORKSPACE_DIR"] = str(settings.workspace_dir)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, interval=0.2, message="the API process to answer")
    return proc


def shared_dir() -> Path:
    """Where steps (running as the account's own uid under a root worker) append what they ran."""
    path = Path(tempfile.mkdtemp(prefix="devops-outbox-"))
    path.chmod(0o777)
    return path


def pipeline_rows(stack: Stack, pipeline_id: int) -> list[PipelineRun]:
    with stack.sessions() as session:
        return list(session.scalars(select(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id)
                                    .order_by(PipelineRun.id)))


@pytest.mark.parametrize("allow_concurrent", [True, False], ids=["concurrent", "queued"])
def test_kill_9_of_the_api_mid_burst_leaves_no_run_stuck_and_none_run_twice(stack, tmp_path, allow_concurrent):
    acct = stack.account()
    ran = shared_dir() / "ran"
    document = {"name": f"burst-{uuid.uuid4().hex[:6]}", "allow_concurrent": allow_concurrent,
                "steps": [{"id": "count", "type": "run_tests",
                           "with": {"command": f'echo "$DEVOPS_RUN_ID" >> {ran}'}}]}
    created = acct.client.post("/pipelines", json=document)
    assert created.status_code == 201, created.text
    pipeline_id = created.json()["id"]

    answers: list[int | str] = []
    unstarted: list[int] = []
    for burst in range(3):  # the kill lands in the commit-to-start window nearly always; if not, again
        port = free_port()
        api = api_process(stack, tmp_path / f"api-burst{burst}.log", port)
        before = len(pipeline_rows(stack, pipeline_id))

        got: list[int | str] = []

        def fire(port: int = port, got: list[int | str] = got) -> None:
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1/devops", timeout=30,
                                  headers={"Authorization": f"Bearer {acct.token}"}) as client:
                    got.append(client.post(f"/pipelines/{pipeline_id}/trigger", json={}).status_code)
            except httpx.HTTPError as exc:
                got.append(type(exc).__name__)

        def mid_burst(got: list[int | str] = got, before: int = before) -> bool:
            return got.count(201) >= 5 or len(pipeline_rows(stack, pipeline_id)) - before >= 25

        threads = [threading.Thread(target=fire) for _ in range(BURST)]
        for thread in threads:
            thread.start()
        # kill -9 mid-burst, once some triggers were answered: the requests in flight die between
        # the row's commit and its workflow's start
        wait_for(mid_burst, timeout=60, interval=0.01, message="the first answered triggers")
        os.kill(api.pid, signal.SIGKILL)
        api.wait(10)
        for thread in threads:
            thread.join(40)
        answers.extend(got)
        rows = pipeline_rows(stack, pipeline_id)
        unstarted = [r.id for r in rows if r.workflow_started_at is None and r.status in ("pending", "queued")]
        print(f"{len(rows) - before} rows at the kill, {len(unstarted)} without a started workflow; answers {got}")
        assert before < len(rows) < before + BURST + 1
        if unstarted:
            break
    assert unstarted, "the kill must land while rows wait for their workflow's start"

    restarted = api_process(stack, tmp_path / "api2.log", free_port())
    try:
        def settled() -> bool:
            return all(r.status in FINISHED for r in pipeline_rows(stack, pipeline_id))

        wait_for(settled, timeout=240, interval=0.5, message="every run of the burst to finish")
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(20)

    rows = pipeline_rows(stack, pipeline_id)
    assert {r.status for r in rows} == {"success"}, [(r.id, r.status, r.error) for r in rows]
    executed = ran.read_text().split()
    assert sorted(executed) == sorted(str(r.id) for r in rows), "every run executed exactly once"
    assert all(workflow_runs(stack, r.id) == 1 for r in rows), "one workflow execution per run"
    # every 201 the clients saw is one of these runs (nothing answered and then lost)
    assert answers.count(201) <= len(rows)


def _unstarted_row(stack: Stack, pipeline_id: int, age_seconds: float, **fields: Any) -> int:
    """What a killed API leaves behind: the committed row of a run whose workflow it never started."""
    with stack.sessions.begin() as session:
        run = services.create_run(session, session.get(Pipeline, pipeline_id), trigger_type="manual", inputs={},
                                  **fields)
        session.flush()
        run_id = run.id
        session.execute(update(PipelineRun).where(PipelineRun.id == run_id)
                        .values(created_at=datetime.now(UTC) - timedelta(seconds=age_seconds)))
    return run_id


def reconcile(stack: Stack, **overrides: Any) -> run_outbox.OutboxResult:
    settings = stack.settings.model_copy(update=overrides)
    return stack.infra.run(run_outbox.reconcile_once(TemporalGateway(settings, stack.temporal), stack.sessions,
                                                     settings))


def workflow_runs(stack: Stack, run_id: int) -> int:
    """How many executions ``run-<id>`` has had (open and closed)."""
    async def count() -> int:
        return len([w async for w in stack.temporal.list_workflows(f'WorkflowId = "run-{run_id}"')])

    return stack.infra.run(count())


def workflow_exists(stack: Stack, run_id: int) -> bool:
    try:
        stack.infra.run(stack.temporal.get_workflow_handle(f"run-{run_id}").describe())
        return True
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise


def create_pipeline(stack: Stack, acct, command: str, **fields: Any) -> int:
    response = acct.client.post("/pipelines", json={
        "name": f"outbox-{uuid.uuid4().hex[:6]}", **fields,
        "steps": [{"id": "one", "type": "run_tests", "with": {"command": command}},
                  {"id": "two", "type": "run_tests", "with": {"command": 'echo "v=2" >> "$DEVOPS_OUTPUT"'}}]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize("allow_concurrent", [True, False], ids=["concurrent", "queued"])
def test_the_reconciler_starts_a_row_left_without_a_workflow(stack, allow_concurrent):
    acct = stack.account()
    pipeline_id = create_pipeline(stack, acct, 'echo "v=1" >> "$DEVOPS_OUTPUT"', allow_concurrent=allow_concurrent)
    young = _unstarted_row(stack, pipeline_id, age_seconds=0)
    old = _unstarted_row(stack, pipeline_id, age_seconds=120)

    result = reconcile(stack, run_outbox_grace_seconds=60)
    assert old in result.started and young not in result.started  # a live request's row is left alone
    assert result.next_due is not None
    final = wait_run(acct.client, old, timeout=60)
    assert final["status"] == "success", final
    assert final["outputs"] == {"one": {"v": "1"}, "two": {"v": "2"}}
    assert [s["attempts"] for s in final["steps"]] == [1, 1]

    # a second replica passing over it changes nothing
    again = reconcile(stack, run_outbox_grace_seconds=0)
    assert old not in again.started and young in again.started
    assert wait_run(acct.client, young, timeout=60)["status"] == "success"


def test_a_retry_from_a_step_left_without_a_workflow_reuses_the_earlier_steps(stack):
    acct = stack.account()
    pipeline_id = create_pipeline(stack, acct, 'echo "v=$RANDOM$RANDOM" >> "$DEVOPS_OUTPUT"')
    first = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={}).json()
    original = wait_run(acct.client, first["id"])
    assert original["status"] == "success"
    with stack.sessions() as session:
        original_row = session.get(PipelineRun, original["id"])
        retry_id = _unstarted_row(stack, pipeline_id, age_seconds=60, retry_of=original_row, from_step="two",
                                  snapshot=original_row.pipeline_snapshot)

    assert retry_id in reconcile(stack).started
    final = wait_run(acct.client, retry_id, timeout=60)
    assert final["status"] == "success", final
    # step one was not run again: its output is the original run's
    assert final["outputs"]["one"] == original["outputs"]["one"]


def test_a_row_that_can_never_start_is_failed_with_the_reason(stack):
    acct = stack.account()
    pipeline_id = create_pipeline(stack, acct, "true")
    first = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={}).json()
    assert wait_run(acct.client, first["id"])["status"] == "success"
    with stack.sessions() as session:
        original_row = session.get(PipelineRun, first["id"])
        # a step the definition does not have (no request can create this; a damaged row can)
        retry_id = _unstarted_row(stack, pipeline_id, age_seconds=60, retry_of=original_row, from_step="gone",
                                  snapshot=original_row.pipeline_snapshot)

    assert retry_id in reconcile(stack).failed
    body = acct.client.get(f"/pipeline_runs/{retry_id}").json()
    assert body["status"] == "failure"
    assert body["error"] == (f"the run could not be started: run {first['id']} has no step 'gone'; "
                             "steps: one, two")
    assert not workflow_exists(stack, retry_id)
    with stack.sessions() as session:
        events = session.scalars(select(RunEvent.event_type).where(RunEvent.run_id == retry_id)).all()
    assert "run_completed" in events


@pytest.mark.parametrize("allow_concurrent", [True, False], ids=["concurrent", "queued"])
def test_cancel_of_a_run_without_a_workflow_cancels_it_and_it_is_never_started(stack, allow_concurrent):
    acct = stack.account()
    pipeline_id = create_pipeline(stack, acct, "true", allow_concurrent=allow_concurrent)
    run_id = _unstarted_row(stack, pipeline_id, age_seconds=120)

    response = acct.client.post(f"/pipeline_runs/{run_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    assert run_id not in reconcile(stack, run_outbox_grace_seconds=0).started
    assert not workflow_exists(stack, run_id)
    with stack.sessions() as session:
        completed = session.scalar(select(func.count()).select_from(RunEvent).where(
            RunEvent.run_id == run_id, RunEvent.event_type == "run_completed"))
    assert completed == 1
    assert acct.client.post(f"/pipeline_runs/{run_id}/cancel").status_code == 409


def test_a_cancel_racing_the_reconciler_still_ends_cancelled(stack, tmp_path, monkeypatch):
    """The reconciler has read the row and is starting it when the cancel marks it cancelled:
    it cancels the workflow it started, so the run does not go on."""
    # the running API's own reconciler must leave this row to the test's steps below
    monkeypatch.setattr(stack.settings, "run_outbox_grace_seconds", 10**6)
    acct = stack.account()
    marker = shared_dir() / "ran"
    pipeline_id = create_pipeline(stack, acct, f"sleep 30; touch {marker}")
    run_id = _unstarted_row(stack, pipeline_id, age_seconds=120)

    # cancel lands between the reconciler's read and its start
    prepared = run_outbox._prepare(stack.sessions, stack.settings, run_id)
    assert prepared is not None and prepared.inp is not None
    assert acct.client.post(f"/pipeline_runs/{run_id}/cancel").json()["status"] == "cancelled"
    gateway = TemporalGateway(stack.settings, stack.temporal)
    stack.infra.run(services.start_run_workflow(gateway, stack.settings, prepared.run, prepared.inp))
    cancelled = services.record_workflow_started(stack.sessions, [run_id])
    assert cancelled == [run_id]
    stack.infra.run(services.cancel_started_meanwhile(gateway, [prepared.run], cancelled))
    final = wait_run(acct.client, run_id, timeout=60)
    assert final["status"] == "cancelled"
    wait_for(lambda: stack.infra.run(stack.temporal.get_workflow_handle(f"run-{run_id}").describe()).status.name
             == "CANCELED", timeout=30, message="the started workflow to be cancelled")
    assert not marker.exists()


def test_retry_of_a_run_still_waiting_for_its_start_says_what_happens(stack):
    acct = stack.account()
    pipeline_id = create_pipeline(stack, acct, "true")
    run_id = _unstarted_row(stack, pipeline_id, age_seconds=0)
    response = acct.client.post(f"/pipeline_runs/{run_id}/retry")
    assert response.status_code == 409
    assert "the API starts it" in response.text and "cancel it" in response.text
    acct.client.post(f"/pipeline_runs/{run_id}/cancel")


def test_temporal_down_at_trigger_answers_503_and_the_row_says_failure_for_good(stack, tmp_path):
    """Unchanged decision: the client is told at once, the run is ``failure`` with the reason and
    the outbox does not start it later behind the client's back."""
    acct = stack.account()
    pipeline_id = create_pipeline(stack, acct, "true")
    settings = make_settings(stack.settings.database_url, tmp_path / "data", "127.0.0.1:1",
                             temporal_namespace=stack.settings.temporal_namespace,
                             task_queue=stack.settings.task_queue, schedule_reconcile_on_start=False)
    api = ApiServer(settings)
    try:
        response = httpx.post(f"{api.url}/api/v1/devops/pipelines/{pipeline_id}/trigger", json={}, timeout=90,
                              headers={"Authorization": f"Bearer {acct.token}"})
    finally:
        api.stop()
    assert response.status_code == 503, response.text
    (row,) = pipeline_rows(stack, pipeline_id)
    assert row.status == "failure" and "Temporal did not accept it" in row.error
    assert row.id not in reconcile(stack, run_outbox_grace_seconds=0).started
    assert not workflow_exists(stack, row.id)


def test_the_queue_never_runs_a_run_twice_when_its_enqueue_is_sent_again(stack):
    """The outbox re-sends the enqueue of a queued run whose first enqueue went through but was
    not recorded: a run the queue already started (or finished) is not started again."""
    acct = stack.account()
    ran = shared_dir() / "ran"
    pipeline_id = create_pipeline(stack, acct, f'echo "$DEVOPS_RUN_ID" >> {ran}', allow_concurrent=False)
    first = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={}).json()
    assert first["status"] == "queued"
    assert wait_run(acct.client, first["id"])["status"] == "success"

    def queue_saw_it_finish() -> bool:
        history = stack.infra.run(stack.temporal.get_workflow_handle(f"pipeline-queue-{pipeline_id}").fetch_history())
        return any(e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED for e in history.events)

    wait_for(queue_saw_it_finish, timeout=30, message="the queue to see its run finish")
    gateway = TemporalGateway(stack.settings, stack.temporal)
    with stack.sessions() as session:
        run = session.get(PipelineRun, first["id"])
        inp = services.workflow_input(run, stack.settings)
        run.status = "queued"  # as the outbox saw it just before the run went through
        stack.infra.run(services.start_run_workflow(gateway, stack.settings, run, inp))
    # a later run through the same queue shows the queue has handled the repeated enqueue
    second = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={}).json()
    assert wait_run(acct.client, second["id"])["status"] == "success"
    assert ran.read_text().split() == [str(first["id"]), str(second["id"])]
    history = stack.infra.run(stack.temporal.get_workflow_handle(f"pipeline-queue-{pipeline_id}").fetch_history())
    children = [e.start_child_workflow_execution_initiated_event_attributes.workflow_id for e in history.events
                if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED]
    assert children == [f"run-{first['id']}", f"run-{second['id']}"]  # the first run's workflow ran once


def test_a_start_sent_again_after_the_run_finished_does_not_run_it_twice(stack):
    """The outbox (or a retried request) re-sends the start of a run whose first start went
    through but was not recorded, after that run has already finished: the finished workflow id
    is not reused, so no second execution begins and no step runs again."""
    acct = stack.account()
    ran = shared_dir() / "ran-direct"
    pipeline_id = create_pipeline(stack, acct, f'echo "$DEVOPS_RUN_ID" >> {ran}', allow_concurrent=True)
    first = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={}).json()
    assert wait_run(acct.client, first["id"])["status"] == "success"
    gateway = TemporalGateway(stack.settings, stack.temporal)
    with stack.sessions() as session:
        run = session.get(PipelineRun, first["id"])
        inp = services.workflow_input(run, stack.settings)
        run.status = "pending"  # as the outbox saw it before the first start was recorded
        stack.infra.run(services.start_run_workflow(gateway, stack.settings, run, inp))  # accepted, not started
    assert workflow_runs(stack, first["id"]) == 1
    assert ran.read_text().split() == [str(first["id"])]
