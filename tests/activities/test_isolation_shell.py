"""Issue 10 §1: a shell step does not reach the host. Under a root worker it runs as the
account's own uid, cannot read the data directory or another account's workspace, sees none of
the worker's settings in its environment, and cannot turn the worker's own file handling (its
output file, the crashed-try pid file) against the host; the shell executor refuses to run when
the installation has it off; finished runs' workspaces are swept after the retention."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.steps import STEP_FAILED, StepActivities
from activities.workspaces import sweep_workspaces
from db.models import PipelineRun
from settings import Settings
from tests.activities.conftest import TEST_SECRET_KEY, RunRows, log_text, make_run_rows, step_input

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="a worker that is not root has no other uid to drop to")


@pytest.fixture
def host(sqlite_url: str) -> Iterator[Settings]:
    """An installation laid out like an operator's: ``<base>/.data`` under a directory others
    may pass (like /var/lib), the workspaces in their default place inside it, and what the
    service keeps there created with ordinary (umask 022) modes before the worker starts."""
    base = Path(tempfile.mkdtemp(prefix="devops-host-"))
    base.chmod(0o755)
    data = base / ".data"
    data.mkdir(mode=0o755)
    (data / "admin.token").write_text("admin-token-value\n")
    (data / "admin.token").chmod(0o600)  # as api.bootstrap writes it
    (data / "devops.db").write_text("key=database-content\n")
    (data / "temporal.db").write_text("key=temporal-content\n")
    (data / "artifacts").mkdir(mode=0o755)
    (data / "artifacts" / "a.tar").write_text("artifact-content")
    for path in (data / "devops.db", data / "temporal.db", data / "artifacts" / "a.tar"):
        path.chmod(0o644)
    yield Settings(environment="test", database_url=sqlite_url, data_dir=data, secret_key=TEST_SECRET_KEY,
                   shell_executor=True)
    shutil.rmtree(base, ignore_errors=True)


async def run(steps: StepActivities, rows: RunRows, command: str, **kwargs):
    return await ActivityEnvironment().run(steps.run_tests, step_input(rows, {"command": command}, **kwargs))


PROBE = (
    'probe() { if "$@" >/dev/null 2>&1; then echo "$1 $2: allowed"; else echo "$1 $2: denied"; fi; }\n'
    'probe cat "$DATA/admin.token"\n'
    'probe cat "$DATA/devops.db"\n'
    'probe cat "$DATA/temporal.db"\n'
    'probe ls "$DATA"\n'
    'probe ls "$DATA/artifacts"\n'
    'probe cat "$DATA/artifacts/a.tar"\n'
    'probe ls "$DATA/workspaces"\n'
    'echo "uid=$(id -u)" >> "$DEVOPS_OUTPUT"\n'
    'echo "gid=$(id -g)" >> "$DEVOPS_OUTPUT"\n'
    'echo "groups=$(id -G)" >> "$DEVOPS_OUTPUT"\n'
    'echo made > made.txt && echo "wrote=$(cat made.txt)" >> "$DEVOPS_OUTPUT"\n'
    'echo x > "$HOME/.profile-test" && echo "home_ok=yes" >> "$DEVOPS_OUTPUT"\n'
)


@root_only
async def test_a_step_runs_as_its_account_uid_and_cannot_read_the_data_directory(host, sqlite_sessions):
    rows = make_run_rows(sqlite_sessions)
    steps = StepActivities(host, sqlite_sessions)
    data = str(host.data_dir.resolve())
    result = await run(steps, rows, PROBE, env={"DATA": data})

    expected = host.step_uid_base + rows.account_id
    assert result.outputs["uid"] == str(expected) and result.outputs["gid"] == str(expected)
    assert result.outputs["groups"] == str(expected), "no supplementary group of the worker (root's 0)"
    assert result.outputs["wrote"] == "made" and result.outputs["home_ok"] == "yes"
    log = log_text(sqlite_sessions, rows.run_id)
    for probe in ("cat $DATA/admin.token", "cat $DATA/devops.db", "cat $DATA/temporal.db", "ls $DATA",
                  "ls $DATA/artifacts", "cat $DATA/artifacts/a.tar", "ls $DATA/workspaces"):
        command, target = probe.split(" ")
        line = f"{command} {target.replace('$DATA', data)}"
        assert f"{line}: denied" in log, (line, log)

    workspace = host.resolved_workspace_dir / f"run-{rows.run_id}"
    info = workspace.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (expected, expected, 0o700)
    assert (workspace / "made.txt").stat().st_uid == expected
    assert host.data_dir.stat().st_mode & 0o777 == 0o711
    assert host.resolved_workspace_dir.stat().st_mode & 0o777 == 0o711
    for name in ("devops.db", "temporal.db", "artifacts"):
        assert (host.data_dir / name).stat().st_mode & 0o077 == 0, name


@root_only
async def test_a_step_of_one_account_cannot_read_another_accounts_workspace(host, sqlite_sessions):
    steps = StepActivities(host, sqlite_sessions)
    first, second = make_run_rows(sqlite_sessions), make_run_rows(sqlite_sessions)
    await run(steps, first, "echo private-of-a > secret.txt")
    other = host.resolved_workspace_dir / f"run-{first.run_id}"
    command = ('if cat "$OTHER/secret.txt"; then echo "read=yes" >> "$DEVOPS_OUTPUT"; '
               'else echo "read=no" >> "$DEVOPS_OUTPUT"; fi; '
               'if ls "$OTHER"; then echo "list=yes" >> "$DEVOPS_OUTPUT"; else echo "list=no" >> "$DEVOPS_OUTPUT"; fi')
    result = await run(steps, second, command, env={"OTHER": str(other)})
    assert result.outputs == {"read": "no", "list": "no"}
    assert "private-of-a" not in log_text(sqlite_sessions, second.run_id)


async def test_the_step_environment_holds_none_of_the_workers_settings(steps, rows, sqlite_sessions, monkeypatch):
    planted = {"DEVOPS_SECRET_KEY": "worker-secret-key-0123456789", "DEVOPS_DATABASE_URL": "postgresql://u:pw@db/x",
               "DATABASE_URL": "postgresql://u:pw@db/y", "DEVOPS_OLD_SECRET_KEYS": "old-key-0123456789abcdef",
               "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-worker"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    result = await ActivityEnvironment().run(steps.run_tests, step_input(rows, {
        "command": 'env | sort; echo "home=$HOME" >> "$DEVOPS_OUTPUT"'}))
    log = log_text(sqlite_sessions, rows.run_id)
    names = {line.split("=", 1)[0] for line in log.splitlines() if "=" in line}
    for name, value in planted.items():
        assert name not in names and value not in log, name
    assert not {n for n in names if n.startswith("DEVOPS_")} - {
        "DEVOPS_WORKSPACE", "DEVOPS_RUN_ID", "DEVOPS_RUN_NUMBER", "DEVOPS_PIPELINE_ID", "DEVOPS_STEP_ID",
        "DEVOPS_STEP_ATTEMPT", "DEVOPS_STEP_ATTEMPT_ID", "DEVOPS_OUTPUT"}, "only the step's own DEVOPS_* variables"
    workspace = steps._settings.resolved_workspace_dir / f"run-{rows.run_id}"
    assert result.outputs["home"] == str(workspace / ".devops" / "home"), "HOME is the step's, not the worker's"


@root_only
async def test_a_link_planted_as_the_output_file_is_neither_followed_nor_written_through(host, sqlite_sessions):
    """The next attempt's output file is where the step left a link to a file only root can
    read (and write): the worker replaces the link, and reads nothing through it."""
    steps = StepActivities(host, sqlite_sessions)
    rows = make_run_rows(sqlite_sessions)
    target = host.data_dir / "devops.db"
    before = target.read_text()
    await run(steps, rows, 'ln -s "$T" "$DEVOPS_WORKSPACE/.devops/output-step-2"; '
                           'ln -sf "$T" "$DEVOPS_OUTPUT"', env={"T": str(target)})
    result = await ActivityEnvironment().run(steps.run_tests, step_input(rows, {"command": "true"}, attempt=2))
    assert result.outputs == {}, "the data directory's file never became outputs"
    assert target.read_text() == before, "the worker did not truncate the link's target"
    assert not (host.resolved_workspace_dir / f"run-{rows.run_id}" / ".devops" / "output-step-2").is_symlink()


@root_only
async def test_a_step_cannot_forge_the_pid_file_the_worker_kills(host, sqlite_sessions):
    """The process group a crashed try left is recorded outside the workspace: a step writing a
    pgid file into its workspace makes the worker kill nothing."""
    import subprocess

    steps = StepActivities(host, sqlite_sessions)
    rows = make_run_rows(sqlite_sessions)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        await run(steps, rows, 'echo "$VICTIM" > "$DEVOPS_WORKSPACE/.devops/pgid-step-2"',
                  env={"VICTIM": str(bystander.pid)})
        await ActivityEnvironment().run(steps.run_tests, step_input(rows, {"command": "true"}, attempt=2))
        assert bystander.poll() is None, "a process the step named was killed by the worker"
    finally:
        bystander.kill()
        bystander.wait()


async def test_the_shell_activity_refuses_when_the_installation_has_the_shell_executor_off(
        sqlite_url, sqlite_sessions, rows, tmp_path):
    """A document stored before the operator turned shell steps off still says shell: the
    activity itself refuses, without running anything."""
    settings = Settings(environment="production", secret_key="a-real-production-secret-key-0123456789",
                        database_url=sqlite_url, data_dir=tmp_path, shell_executor=False)
    assert not settings.shell_executor_enabled
    marker = tmp_path / "ran"
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(StepActivities(settings, sqlite_sessions).run_tests,
                                        step_input(rows, {"command": f"touch {marker}"}))
    assert info.value.type == STEP_FAILED and info.value.non_retryable
    assert "shell executor is off" in info.value.message and "DEVOPS_SHELL_EXECUTOR" in info.value.message
    assert not marker.exists()


def _finish(sessions: sessionmaker[Session], run_id: int, status: str, finished_at: datetime | None) -> None:
    with sessions.begin() as session:
        run = session.get(PipelineRun, run_id)
        run.status, run.finished_at = status, finished_at


async def test_the_sweep_removes_finished_runs_workspaces_after_the_retention_only(
        sqlite_url, sqlite_sessions, tmp_path):
    settings = Settings(environment="test", database_url=sqlite_url, data_dir=tmp_path, secret_key=TEST_SECRET_KEY,
                        shell_executor=True, workspace_retention_hours=2,
                        **({"workspace_dir": _traversable_dir()} if os.geteuid() == 0 else {}))
    steps = StepActivities(settings, sqlite_sessions)
    now = datetime.now(UTC)
    old, recent, running = (make_run_rows(sqlite_sessions) for _ in range(3))
    for rows in (old, recent, running):
        await run(steps, rows, "echo kept > file.txt")
    _finish(sqlite_sessions, old.run_id, "success", now - timedelta(hours=3))
    _finish(sqlite_sessions, recent.run_id, "failure", now - timedelta(minutes=30))
    _finish(sqlite_sessions, running.run_id, "running", None)
    root = settings.resolved_workspace_dir

    assert await _sweep(settings, sqlite_sessions) == [old.run_id]
    assert not (root / f"run-{old.run_id}").exists()
    assert (root / f"run-{recent.run_id}" / "file.txt").exists() and (root / f"run-{running.run_id}").exists()

    zero = settings.model_copy(update={"workspace_retention_hours": 0})
    assert await _sweep(zero, sqlite_sessions) == [recent.run_id]
    assert (root / f"run-{running.run_id}" / "file.txt").exists(), "a running run's workspace stays"


async def _sweep(settings: Settings, sessions: sessionmaker[Session]) -> list[int]:
    import asyncio

    return await asyncio.to_thread(sweep_workspaces, settings, sessions)


def _traversable_dir() -> Path:
    from tests.harness import step_workspace_dir

    path = step_workspace_dir()
    assert path is not None
    return path
