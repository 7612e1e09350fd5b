"""Durability: the run timeout, a worker killed with SIGKILL mid-step, and replay of
recorded histories against the current workflow code."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from db.models import Pipeline
from services import runs as services
from tests.harness import build_stack, make_settings, wait_for, wait_run, worker_process
from tests.workflows.test_pipeline_run import _alive, create_pipeline, sh, steps_by_id, trigger
from workflows.pipeline_run import PipelineRunWorkflow

HISTORIES = Path(__file__).parent / "histories"


def test_the_run_timeout_bounds_the_whole_run_and_kills_the_running_step(stack, tmp_path):
    acct = stack.account()
    pidfile = tmp_path / "pid"
    pid = create_pipeline(acct, steps=[sh("slow", f"sleep 120 & echo $! > {pidfile}; wait"), sh("later", "true")])

    # The document's limit is in minutes; start the same workflow with a 2-second bound.
    with stack.sessions.begin() as session:
        pipeline = session.get(Pipeline, pid)
        run = services.create_run(session, pipeline, trigger_type="manual", inputs={})
        session.flush()
        inp = dataclasses.replace(services.workflow_input(run, stack.settings), timeout_seconds=2)
        run_id, workflow_id = run.id, run.workflow_id
    run.status = "pending"
    stack.infra.run(stack.temporal.start_workflow(PipelineRunWorkflow.run, inp, id=workflow_id,
                                                  task_queue=stack.settings.task_queue))
    final = wait_run(acct.client, run_id, timeout=30)
    assert final["status"] == "failure"
    assert final["error"] == "run timed out after 2 seconds"
    steps = steps_by_id(final)
    assert steps["slow"]["status"] == "failure" and steps["later"]["status"] == "cancelled"
    sleeper = int(pidfile.read_text())
    wait_for(lambda: not _alive(sleeper), timeout=10, message="the timed-out step's process to be gone")


def test_a_worker_killed_mid_step_resumes_without_rerunning_completed_steps(
    database_url, infra, temporal_env, tmp_path
):
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    target = temporal_env.client.service_client.config.target_host
    settings = make_settings(database_url, tmp_path / "data", target, temporal_namespace=backend,
                             step_heartbeat_timeout_seconds=2.0)
    from tests.harness import connect

    stack = build_stack(backend, settings, infra, infra.run(connect(target, backend)), worker=False)
    first = worker_process(settings, tmp_path / "worker1.log")
    second = None
    try:
        acct = stack.account()
        journal = tmp_path / "journal"
        pid = create_pipeline(acct, steps=[
            sh("a", f"echo a >> {journal}"),
            sh("b", f'echo b >> {journal}; echo "made=b" >> "$DEVOPS_OUTPUT"'),
            # The first try sleeps long enough to still be running when the retry starts.
            sh("c", f'echo c-start >> {journal}; if [ -e {journal}.again ]; then sleep 0.2; '
                    f'else touch {journal}.again; sleep 30; fi; echo c-end >> {journal}; echo "saw=$B" >> "$DEVOPS_OUTPUT"',
               env={"B": "${{ steps.b.outputs.made }}"}),
        ])
        run = trigger(acct, pid)
        wait_for(lambda: journal.exists() and "c-start" in journal.read_text(), timeout=60,
                 message="step c to start on the first worker")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = worker_process(settings, tmp_path / "worker2.log")
        final = wait_run(acct.client, run["id"], timeout=90)
        assert final["status"] == "success", (final, (tmp_path / "worker2.log").read_text()[-3000:])
        lines = journal.read_text().split()
        assert lines.count("a") == 1 and lines.count("b") == 1  # completed steps never ran again
        assert lines.count("c-start") == 2 and lines.count("c-end") == 1  # the orphaned try was killed
        assert steps_by_id(final)["c"]["outputs"] == {"saw": "b"}
        assert steps_by_id(final)["c"]["attempts"] == 1  # an infrastructure retry, not a user attempt
        logs = acct.client.get(f"/pipeline_runs/{run['id']}/logs", params={"step_id": "c"}).json()["data"]
        assert any("running the step again" in chunk["content"] for chunk in logs)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        stack.close()


def _histories_of(stack, workflow_ids: list[str]) -> list[WorkflowHistory]:
    async def fetch() -> list[WorkflowHistory]:
        return [await stack.temporal.get_workflow_handle(wid).fetch_history() for wid in workflow_ids]

    return stack.infra.run(fetch())


def _replay(histories: list[WorkflowHistory]) -> None:
    from worker import WORKFLOWS

    replayer = Replayer(workflows=WORKFLOWS)

    async def replay() -> None:
        for history in histories:
            await replayer.replay_workflow(history)

    import asyncio

    asyncio.run(replay())


def test_fresh_histories_replay_deterministically(stack, tmp_path):
    """Runs covering success, skip, retry, failure, cancel and the queue replay without
    non-determinism. With RECORD_HISTORIES=1 they are saved for the test below."""
    acct = stack.account()
    marker = tmp_path / f"m-{uuid.uuid4().hex}"
    pid = create_pipeline(acct, steps=[
        sh("one", 'echo "v=1" >> "$DEVOPS_OUTPUT"'),
        sh("skip", "true", **{"if": "${{ steps.one.outputs.v == '2' }}"}),
        sh("flaky", f"if [ -e {marker} ]; then true; else touch {marker}; exit 1; fi", retry={"max_attempts": 2}),
        {"id": "meta", "type": "custom", "with": {"handler": "noop", "outputs": {"k": "v"}}},
        sh("fail", "exit 4", continue_on_error=True),
    ])
    ok = wait_run(acct.client, trigger(acct, pid)["id"])
    assert ok["status"] == "success"
    failing = create_pipeline(acct, steps=[sh("boom", "exit 2"), sh("after", "true")])
    failed = wait_run(acct.client, trigger(acct, failing)["id"])
    assert failed["status"] == "failure"
    pidfile = tmp_path / "pid"
    queued = create_pipeline(acct, allow_concurrent=False, steps=[sh("long", f"echo $$ > {pidfile}; sleep 30")])
    cancelled = trigger(acct, queued)
    wait_for(lambda: pidfile.exists(), message="the long step to start")
    acct.client.post(f"/pipeline_runs/{cancelled['id']}/cancel")
    assert wait_run(acct.client, cancelled["id"])["status"] == "cancelled"

    ids = [ok["workflow_id"], failed["workflow_id"], cancelled["workflow_id"], f"pipeline-queue-{queued}"]
    histories = _histories_of(stack, ids[:3])
    _replay(histories)
    if os.environ.get("RECORD_HISTORIES") == "1" and stack.backend == "sqlite":
        HISTORIES.mkdir(exist_ok=True)
        for name, history in zip(["success-retry-skip", "failure", "cancelled"], histories, strict=True):
            (HISTORIES / f"pipeline-run-{name}.json").write_text(history.to_json())


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_histories_replay_against_current_code(path):
    """Histories recorded from earlier releases must still replay: a change that breaks them
    would break runs in flight during a deploy."""
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    _replay([history])


def test_recorded_histories_exist():
    assert len(list(HISTORIES.glob("*.json"))) >= 3
