"""Issue 11 items 3 and 5: a worker killed with SIGKILL while a step runs. Its step's process
group must not outlive it: the next worker started on the host kills it at once, a live worker
sharing the host leaves it alone, and a run cancelled while no worker was up records its steps
as cancelled (not "timed out", not "skipped")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from activities import workspaces
from activities.workspaces import record_process_group, worker_state_file
from tests.harness import build_stack, connect, make_settings, wait_for, wait_run, worker_process
from tests.workflows.test_pipeline_run import _alive, create_pipeline, sh, steps_by_id, trigger


@contextmanager
def crash_stack(database_url, infra, temporal_env, tmp_path: Path, heartbeat: float):
    """API and database in this process, workers as separate ``python worker.py`` processes."""
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    target = temporal_env.client.service_client.config.target_host
    settings = make_settings(database_url, tmp_path / "data", target, temporal_namespace=backend,
                             step_heartbeat_timeout_seconds=heartbeat)
    stack = build_stack(backend, settings, infra, infra.run(connect(target, backend)), worker=False)
    workers: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        proc = worker_process(settings, tmp_path / f"{name}.log")
        workers.append(proc)
        return proc

    try:
        yield stack, start
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stack.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _polling(log: Path) -> bool:
    return log.exists() and "worker polling" in log.read_text()


def test_a_run_cancelled_while_its_worker_is_down_ends_with_cancelled_steps_and_no_process_left(
    database_url, infra, temporal_env, tmp_path
):
    # The worker comes back before the heartbeat timeout: Temporal can only end the step's
    # activity with that timeout (nobody was there to confirm the cancel).
    with crash_stack(database_url, infra, temporal_env, tmp_path, heartbeat=12.0) as (stack, start):
        first = start("worker1")
        acct = stack.account()
        pidfile = tmp_path / "sleep.pid"
        pid = create_pipeline(acct, steps=[sh("long", f"sleep 600 & echo $! > {pidfile}; wait"),
                                           sh("after", "true")])
        run = trigger(acct, pid)
        sleeper = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=60,
                               message="the long step to start"))
        _kill(first)
        assert _alive(sleeper), "SIGKILL of the worker leaves its step running (the premise)"
        response = acct.client.post(f"/pipeline_runs/{run['id']}/cancel")
        assert response.status_code in (200, 202), response.text
        start("worker2")

        wait_for(lambda: not _alive(sleeper), timeout=20, message="the orphaned step to be killed")
        final = wait_run(acct.client, run["id"], timeout=90)
        assert final["status"] == "cancelled", final
        steps = steps_by_id(final)
        assert steps["long"]["status"] == "cancelled", steps["long"]
        assert "timed out" not in (steps["long"].get("error") or "")
        assert steps["after"]["status"] == "cancelled", steps["after"]
        assert pidfile.read_text().strip() == str(sleeper), "the step was not started again"


def test_a_step_retried_after_its_run_was_cancelled_does_not_run_its_command_again(
    database_url, infra, temporal_env, tmp_path
):
    # The worker comes back after the heartbeat timeout: Temporal retries the step's activity on
    # it, and that try must wait for the cancel instead of starting the command a second time.
    with crash_stack(database_url, infra, temporal_env, tmp_path, heartbeat=3.0) as (stack, start):
        first = start("worker1")
        acct = stack.account()
        journal = tmp_path / "journal"
        pid = create_pipeline(acct, steps=[sh("long", f"echo started >> {journal}; sleep 600"),
                                           sh("after", "true")])
        run = trigger(acct, pid)
        wait_for(lambda: journal.exists(), timeout=60, message="the long step to start")
        _kill(first)
        response = acct.client.post(f"/pipeline_runs/{run['id']}/cancel")
        assert response.status_code in (200, 202), response.text
        time.sleep(6)  # past the heartbeat timeout: the activity is retried when a worker returns
        start("worker2")
        final = wait_run(acct.client, run["id"], timeout=90)
        assert final["status"] == "cancelled", final
        assert steps_by_id(final)["long"]["status"] == "cancelled"
        assert journal.read_text().splitlines() == ["started"], "the command ran again after the cancel"


def test_the_next_worker_kills_a_dead_workers_orphans_at_start_and_spares_a_live_workers(
    database_url, infra, temporal_env, tmp_path
):
    # A heartbeat timeout far beyond the assertion: the retry's own cleanup cannot be what kills it.
    with crash_stack(database_url, infra, temporal_env, tmp_path, heartbeat=60.0) as (stack, start):
        first = start("worker1")
        acct = stack.account()
        pidfile = tmp_path / "sleep.pid"
        pid = create_pipeline(acct, steps=[sh("long", f"sleep 600 & echo $! > {pidfile}; wait")])
        run = trigger(acct, pid)
        sleeper = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=60,
                               message="the long step to start"))

        # A second worker starting on the same host and root while the first lives: not an orphan.
        start("worker2")
        wait_for(lambda: _polling(tmp_path / "worker2.log"), timeout=60, message="worker 2 to start")
        time.sleep(1)
        assert _alive(sleeper), "a live worker's step must survive another worker's start"

        _kill(first)
        assert _alive(sleeper)
        started = time.monotonic()
        start("worker3")
        wait_for(lambda: not _alive(sleeper), timeout=20, interval=0.05,
                 message="worker 3 to kill the orphaned step at start")
        elapsed = time.monotonic() - started
        assert elapsed < 20, elapsed  # the retry would come after the 60 s heartbeat timeout
        wait_for(lambda: "killed the orphaned process group" in (tmp_path / "worker3.log").read_text(),
                 timeout=10, message="worker 3 to log the orphan it killed")

        acct.client.post(f"/pipeline_runs/{run['id']}/cancel")
        assert wait_run(acct.client, run["id"], timeout=90)["status"] == "cancelled"


def test_the_orphan_sweep_kills_only_groups_whose_worker_is_gone(tmp_path):
    """``kill_orphaned_steps`` judges each recorded group by its worker: gone (a pid whose start
    time no longer matches) → the whole group is killed; alive (this process) → left alone; a
    record from before a reboot → forgotten without a signal (its numbers may be reused)."""
    settings = make_settings("sqlite:///unused.db", tmp_path / "data", "127.0.0.1:1")
    dead_worker = subprocess.Popen(["sleep", "0.2"])
    dead_start = workspaces._process_start(dead_worker.pid)
    dead_worker.wait()
    groups = {name: subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
              for name in ("orphan", "live", "rebooted")}
    try:
        for name, proc in groups.items():
            path = worker_state_file(settings, 1, f"pgid-{name}-1")
            record_process_group(path, proc.pid, run_id=1, step_id=name, attempt=1)
            record = json.loads(path.read_text())
            if name == "orphan":
                record.update(worker_pid=dead_worker.pid, worker_start=dead_start)
            elif name == "rebooted":
                record.update(worker_pid=dead_worker.pid, worker_start=dead_start, boot_id="another-boot")
            path.write_text(json.dumps(record))

        killed = workspaces.kill_orphaned_steps(settings)

        assert [r["step_id"] for r in killed] == ["orphan"]
        assert groups["orphan"].wait(5) == -signal.SIGTERM  # the group leader, after SIGTERM
        assert groups["live"].poll() is None and groups["rebooted"].poll() is None
        assert worker_state_file(settings, 1, "pgid-live-1").exists()
        assert not worker_state_file(settings, 1, "pgid-orphan-1").exists()
        assert not worker_state_file(settings, 1, "pgid-rebooted-1").exists()
    finally:
        for proc in groups.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
