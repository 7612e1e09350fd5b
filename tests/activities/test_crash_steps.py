"""Issue 11 item 4: a step's outcome is committed (``StepAttemptResult``) as soon as its command
exits, and a later try of the same attempt returns it instead of running the command again.
The activity-level tests run ``step_run_tests`` in an ``ActivityEnvironment`` on both databases;
the crash test kills a real ``python worker.py`` at the moment commands end."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.steps import StepActivities
from db.models import StepAttemptResult
from tests.activities.conftest import log_text, make_run_rows, make_test_settings, step_input
from tests.activities.test_steps import run_step, step_failure
from tests.harness import build_stack, connect, make_settings, wait_for, wait_run, worker_process
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id, trigger


def recorded(sessions: sessionmaker[Session], run_id: int, step_id: str = "step",
             attempt: int = 1) -> StepAttemptResult | None:
    with sessions() as session:
        return session.scalar(select(StepAttemptResult).where(
            StepAttemptResult.run_id == run_id, StepAttemptResult.step_id == step_id,
            StepAttemptResult.attempt == attempt))


def retry_env() -> ActivityEnvironment:
    """Temporal's second try of the same attempt (the first one's worker died)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    return env


@pytest.fixture
def backend_steps(backend_sessions, tmp_path):
    url = backend_sessions.kw["bind"].url.render_as_string(hide_password=False)
    return StepActivities(make_test_settings(url, tmp_path), backend_sessions)


async def test_a_recorded_success_is_returned_without_running_the_command_again(
    backend_steps, backend_sessions, tmp_path
):
    rows = make_run_rows(backend_sessions)
    marker = tmp_path / "ran"
    with backend_sessions.begin() as session:
        session.add(StepAttemptResult(run_id=rows.run_id, step_id="step", attempt=1, exit_code=0,
                                      outputs={"version": "1.2.3"}))
    result = await run_step(backend_steps.run_tests,
                            step_input(rows, {"command": f"echo again >> {marker}"}), retry_env())
    assert result.outputs == {"version": "1.2.3"}
    assert not marker.exists(), "the command must not run again"
    assert "returning its recorded result without running it again" in log_text(backend_sessions, rows.run_id)


async def test_an_exit_code_left_by_a_dead_tries_command_is_recorded_and_returned_without_running_again(
    backend_steps, backend_sessions, tmp_path
):
    """The worker died between the command's exit and the record: the command's own wrapper shell
    wrote its exit code, so the next try answers it (and its outputs) instead of running again."""
    rows = make_run_rows(backend_sessions)
    marker = tmp_path / "ran"
    state = backend_steps.workspace(rows.run_id, rows.account_id) / ".devops"
    state.mkdir(exist_ok=True)
    (state / "exit-step-1").write_text("0")
    (state / "output-step-1").write_text("version=2.0.0\n")
    result = await run_step(backend_steps.run_tests,
                            step_input(rows, {"command": f"echo again >> {marker}"}), retry_env())
    assert result.outputs == {"version": "2.0.0"}
    assert not marker.exists(), "the command must not run again"
    with backend_sessions() as session:
        row = session.scalar(select(StepAttemptResult).where(StepAttemptResult.run_id == rows.run_id))
    assert (row.exit_code, row.outputs) == (0, {"version": "2.0.0"})


async def test_the_command_wrapper_leaves_its_exit_code_for_a_later_try(
    backend_steps, backend_sessions
):
    rows = make_run_rows(backend_sessions)
    err = await step_failure(backend_steps.run_tests, step_input(rows, {"command": "exit 7"}))
    assert err.message == "command exited with code 7"
    exit_file = backend_steps.workspace(rows.run_id, rows.account_id) / ".devops" / "exit-step-1"
    assert exit_file.read_text() == "7"


async def test_a_recorded_failure_is_raised_again_without_running_the_command(
    backend_steps, backend_sessions, tmp_path
):
    rows = make_run_rows(backend_sessions)
    marker = tmp_path / "ran"
    with backend_sessions.begin() as session:
        session.add(StepAttemptResult(run_id=rows.run_id, step_id="step", attempt=1, exit_code=3,
                                      outputs={"partial": "yes"}, error="command exited with code 3"))
    err = await step_failure(backend_steps.run_tests,
                             step_input(rows, {"command": f"echo again >> {marker}"}), retry_env())
    assert err.message == "command exited with code 3"
    assert err.details[0] == {"partial": "yes"}
    assert not marker.exists()


async def test_the_outcome_is_recorded_per_attempt_and_each_attempt_has_a_stable_id(
    backend_steps, backend_sessions, tmp_path
):
    rows = make_run_rows(backend_sessions)
    command = 'echo "id=$DEVOPS_STEP_ATTEMPT_ID" >> "$DEVOPS_OUTPUT"; exit "$CODE"'
    ok = await run_step(backend_steps.run_tests, step_input(rows, {"command": command, "env": {"CODE": "0"}}))
    assert ok.outputs == {"id": f"{rows.run_id}-step-1"}
    first = recorded(backend_sessions, rows.run_id)
    assert (first.exit_code, first.outputs, first.error) == (0, ok.outputs, None)

    err = await step_failure(backend_steps.run_tests,
                             step_input(rows, {"command": command, "env": {"CODE": "4"}}, attempt=2))
    assert err.details[0] == {"id": f"{rows.run_id}-step-2"}
    second = recorded(backend_sessions, rows.run_id, attempt=2)
    assert (second.exit_code, second.error) == (4, "command exited with code 4")

    # A retry of attempt 2 (same id) answers the same without running the command.
    again = await step_failure(backend_steps.run_tests, step_input(rows, {"command": "exit 9"}, attempt=2),
                               retry_env())
    assert (again.message, again.details[0]) == (err.message, err.details[0])


def test_a_concurrent_duplicate_record_keeps_the_first_outcome(backend_steps, backend_sessions):
    """Two tries of one attempt finishing together (a worker that lost contact but lived on):
    the second insert does nothing and that try answers with the first one's outcome."""
    rows = make_run_rows(backend_sessions)
    inp = step_input(rows, {"command": "true"})
    first = backend_steps._record_outcome(inp, 0, {"a": "1"}, None)
    second = backend_steps._record_outcome(inp, 5, {}, "command exited with code 5")
    assert (first.exit_code, first.outputs, first.error) == (0, {"a": "1"}, None)
    assert (second.exit_code, second.outputs, second.error) == (0, {"a": "1"}, None)


# ---- a worker killed as commands end --------------------------------------------------------


def _row_exists(sessions: sessionmaker[Session], run_id: int, step_id: str) -> bool:
    return recorded(sessions, run_id, step_id) is not None


def test_steps_whose_outcome_was_recorded_never_run_again_after_a_worker_kill(
    database_url, infra, temporal_env, tmp_path
):
    """Five steps; as each one's command ends the worker gets SIGKILL (timed on the command's
    last line, on its outcome row, or a little later), then a new worker takes over. A step
    whose outcome was committed before the kill must have run exactly once."""
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    target = temporal_env.client.service_client.config.target_host
    settings = make_settings(database_url, tmp_path / "data", target, temporal_namespace=backend,
                             step_heartbeat_timeout_seconds=2.0)
    stack = build_stack(backend, settings, infra, infra.run(connect(target, backend)), worker=False)
    journal = tmp_path / "journal"  # outside the workspace; tmp_path is writable by the step users
    ids = ["s1", "s2", "s3", "s4", "s5"]
    # when to kill: on the line, on the committed row, or this many seconds after the line
    plans: list[str | float] = [0.0, "row", 0.0, 0.02, "row"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(worker_process(settings, tmp_path / "worker0.log"))
        acct = stack.account()
        pid = create_pipeline(acct, steps=[
            sh(sid, f'echo "out={sid}" >> "$DEVOPS_OUTPUT"; echo "{sid} $DEVOPS_STEP_ATTEMPT_ID" >> {journal}')
            for sid in ids
        ])
        run = trigger(acct, pid)
        recorded_at_kill: dict[str, bool] = {}
        for n, (sid, plan) in enumerate(zip(ids, plans, strict=True)):
            wait_for(lambda sid=sid: journal.exists() and f"{sid} " in journal.read_text(), timeout=90,
                     interval=0.001, message=f"step {sid} to run")
            if plan == "row":
                deadline = time.monotonic() + 5
                while not _row_exists(stack.sessions, run["id"], sid) and time.monotonic() < deadline:
                    time.sleep(0.001)
            elif plan:
                time.sleep(float(plan))
            workers[-1].send_signal(signal.SIGKILL)
            workers[-1].wait(10)
            recorded_at_kill[sid] = _row_exists(stack.sessions, run["id"], sid)
            workers.append(worker_process(settings, tmp_path / f"worker{n + 1}.log"))

        final = wait_run(acct.client, run["id"], timeout=120)
        assert final["status"] == "success", final
        lines = journal.read_text().splitlines()
        runs = {sid: [line for line in lines if line.split()[0] == sid] for sid in ids}
        for sid in ids:
            assert set(runs[sid]) == {f"{sid} {run['id']}-{sid}-1"}, runs[sid]  # one id for every try
            assert steps_by_id(final)[sid]["outputs"] == {"out": sid}
        replayed = {sid for sid in ids if any(
            "returning its recorded result" in chunk["content"] for chunk in
            acct.client.get(f"/pipeline_runs/{run['id']}/logs", params={"step_id": sid}).json()["data"])}
        twice = [sid for sid in ids if recorded_at_kill[sid] and len(runs[sid]) != 1]
        assert not twice, (f"recorded steps ran again: {twice}", recorded_at_kill, runs, replayed)
        print("recorded at kill:", recorded_at_kill, "answered from the record:", sorted(replayed))
        assert sum(recorded_at_kill.values()) >= 2, recorded_at_kill
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stack.close()
