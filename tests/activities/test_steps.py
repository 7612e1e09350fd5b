"""The step activities run for real: shell commands, git against local bare repositories, HTTP
POSTs to a server on 127.0.0.1, and a real database, inside a Temporal ``ActivityEnvironment``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.steps import STEP_FAILED, StepActivities, StepResult, secret_placeholder
from activities.workspaces import worker_state_file
from db.crypto import SecretBox
from db.models import Secret, StepAttemptResult
from settings import Settings
from tests.activities.conftest import (
    TEST_SECRET_KEY,
    RunRows,
    log_chunks,
    log_text,
    make_run_rows,
    make_test_settings,
    step_input,
)

# ---- helpers -------------------------------------------------------------------------------


async def run_step(fn: Any, inp: Any, env: ActivityEnvironment | None = None) -> StepResult:
    return await (env or ActivityEnvironment()).run(fn, inp)


async def step_failure(fn: Any, inp: Any, env: ActivityEnvironment | None = None) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run_step(fn, inp, env)
    err = info.value
    assert err.type == STEP_FAILED, err
    assert err.non_retryable
    return err


def workspace_of(settings: Settings, rows: RunRows) -> Path:
    return settings.resolved_workspace_dir / f"run-{rows.run_id}"


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_until_gone(*pids: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(process_gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return all(process_gone(pid) for pid in pids)


async def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def attempt_env(attempt: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 nothing listens on, held bound so no other test takes it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def add_secret(sessions: sessionmaker[Session], account_id: int, name: str, value: str) -> None:
    with sessions.begin() as session:
        session.add(Secret(account_id=account_id, name=name,
                           encrypted_value=SecretBox(TEST_SECRET_KEY).encrypt(value)))


# ---- run_tests -----------------------------------------------------------------------------


async def test_run_tests_streams_output_lines_into_log_chunks_in_order(steps, rows, sqlite_sessions):
    command = "for i in 1 2 3 4; do echo line-$i; sleep 0.3; done; echo err-line >&2"
    result = await run_step(steps.run_tests, step_input(rows, {"command": command}))

    assert result.outputs == {}
    chunks = log_chunks(sqlite_sessions, rows.run_id)
    seqs = [chunk.seq for chunk in chunks]
    assert len(chunks) >= 2, "output arriving over time is flushed in several chunks"
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1
    lines = log_text(sqlite_sessions, rows.run_id).splitlines()
    assert lines == ["line-1", "line-2", "line-3", "line-4", "err-line"]


async def test_run_tests_heartbeats_while_the_command_runs(steps, rows):
    env = ActivityEnvironment()
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    await run_step(steps.run_tests, step_input(rows, {"command": "sleep 2.5"}), env)
    assert len(beats) >= 2


async def test_run_tests_outputs_come_from_devops_output_key_value_and_heredoc(steps, rows):
    command = (
        'echo "version=1.2.3" >> "$DEVOPS_OUTPUT"\n'
        'echo "url=http://x.test/?a=b" >> "$DEVOPS_OUTPUT"\n'
        "printf 'notes<<EOF\\nfirst line\\nsecond = line\\nEOF\\n' >> \"$DEVOPS_OUTPUT\"\n"
        'echo "after=yes" >> "$DEVOPS_OUTPUT"\n'
    )
    result = await run_step(steps.run_tests, step_input(rows, {"command": command}))
    assert result.outputs == {
        "version": "1.2.3",
        "url": "http://x.test/?a=b",
        "notes": "first line\nsecond = line",
        "after": "yes",
    }


async def test_run_tests_passes_env_and_step_env_as_variables(steps, rows):
    command = 'echo "got=$GREETING-$OTHER-$DEVOPS_STEP_ID" >> "$DEVOPS_OUTPUT"'
    inp = step_input(rows, {"command": command, "env": {"OTHER": 7}}, env={"GREETING": "$(touch pwned)"})
    result = await run_step(steps.run_tests, inp)
    assert result.outputs == {"got": "$(touch pwned)-7-step"}
    assert not list(workspace_of(steps._settings, rows).rglob("pwned"))


async def test_run_tests_nonzero_exit_fails_with_the_outputs_written_so_far(steps, rows, sqlite_sessions):
    command = 'echo "partial=yes" >> "$DEVOPS_OUTPUT"; echo before; exit 3'
    err = await step_failure(steps.run_tests, step_input(rows, {"command": command}))

    assert err.message == "command exited with code 3"
    assert err.details[0] == {"partial": "yes"}
    log = log_text(sqlite_sessions, rows.run_id)
    assert "before" in log and "[devops] command exited with code 3" in log


async def test_run_tests_stops_at_the_first_failing_command(steps, rows):
    err = await step_failure(steps.run_tests, step_input(rows, {"command": "false | true; false; touch ran"}))
    assert "exited with code 1" in err.message
    assert not (workspace_of(steps._settings, rows) / "ran").exists()


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="a" tests="5" failures="1" errors="1" skipped="1"><testcase name="x"/></testsuite>
  <testsuite name="b" tests="3" failures="0" errors="0" skipped="0"><testcase name="y"/></testsuite>
</testsuites>
"""


async def test_run_tests_junit_report_gives_passed_failed_skipped_total(steps, rows):
    command = 'mkdir -p reports && printf "%s" "$REPORT" > reports/junit.xml'
    inp = step_input(rows, {"command": command, "junit": "reports/junit.xml", "env": {"REPORT": JUNIT}})
    result = await run_step(steps.run_tests, inp)
    assert result.outputs == {"total": 8, "failed": 2, "skipped": 1, "passed": 5}


async def test_run_tests_junit_counts_are_in_the_failure_details_when_tests_fail(steps, rows):
    command = 'printf "%s" "$REPORT" > junit.xml; exit 1'
    inp = step_input(rows, {"command": command, "junit": "junit.xml", "env": {"REPORT": JUNIT}})
    err = await step_failure(steps.run_tests, inp)
    assert err.message == "command exited with code 1"
    assert err.details[0] == {"total": 8, "failed": 2, "skipped": 1, "passed": 5}


async def test_run_tests_failing_command_without_junit_report_reports_the_exit_code(steps, rows):
    err = await step_failure(steps.run_tests, step_input(rows, {"command": "exit 2", "junit": "junit.xml"}))
    assert err.message == "command exited with code 2"


async def test_run_tests_missing_junit_report_after_success_fails_naming_it(steps, rows):
    err = await step_failure(steps.run_tests, step_input(rows, {"command": "true", "junit": "junit.xml"}))
    assert "JUnit report not found" in err.message


@pytest.mark.parametrize("field", ["working_directory", "junit"])
@pytest.mark.parametrize("path", ["../..", "/etc", "sub/../../.."])
async def test_run_tests_refuses_paths_escaping_the_workspace(steps, rows, tmp_path, field, path):
    marker = tmp_path / "ran"
    params = {"command": f"touch {marker}", field: path}
    err = await step_failure(steps.run_tests, step_input(rows, params))
    assert f"`with.{field}` must stay inside the workspace" in err.message
    assert not marker.exists(), "the command must not run"


async def test_run_tests_runs_in_the_working_directory_inside_the_workspace(steps, rows):
    result = await run_step(steps.run_tests, step_input(
        rows, {"command": 'echo "cwd=$PWD" >> "$DEVOPS_OUTPUT"', "working_directory": "sub/dir"}))
    assert result.outputs["cwd"] == str(workspace_of(steps._settings, rows) / "sub" / "dir")


async def test_run_tests_log_cap_writes_a_truncation_marker_and_stops(rows, sqlite_url, sqlite_sessions, tmp_path):
    settings = make_test_settings(sqlite_url, tmp_path, step_log_cap_bytes=200)
    steps = StepActivities(settings, sqlite_sessions)
    command = "for i in $(seq 1 100); do echo line-$i-xxxxxxxxxxxx; done; echo done=yes >> \"$DEVOPS_OUTPUT\""
    result = await run_step(steps.run_tests, step_input(rows, {"command": command}))

    assert result.outputs == {"done": "yes"}, "the step itself goes on to the end"
    lines = log_text(sqlite_sessions, rows.run_id).splitlines()
    assert lines[0] == "line-1-xxxxxxxxxxxx"
    assert lines[-1] == "[devops] log truncated: this step's output exceeded 200 bytes"
    assert "line-100-xxxxxxxxxxxx" not in lines
    assert sum(len(line) + 1 for line in lines[:-1]) <= 200


async def test_run_tests_cancel_kills_the_whole_process_group(steps, rows, sqlite_sessions):
    ws = workspace_of(steps._settings, rows)
    command = 'sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; echo started; sleep 300'
    env = ActivityEnvironment()
    task = asyncio.create_task(run_step(steps.run_tests, step_input(rows, {"command": command}), env))
    bg_pid = int(await wait_for_file(ws / "bg.pid"))
    sh_pid = int(await wait_for_file(ws / "sh.pid"))
    assert not process_gone(bg_pid) and not process_gone(sh_pid)

    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=15)

    assert await wait_until_gone(bg_pid, sh_pid), "the shell and its background child must be killed"
    assert "[devops] step cancelled" in log_text(sqlite_sessions, rows.run_id)
    assert not worker_state_file(steps._settings, rows.run_id, "pgid-step-1").exists(), "the pid file is removed"


async def test_run_tests_finishes_when_the_shell_exits_and_kills_background_children(steps, rows):
    ws = workspace_of(steps._settings, rows)
    command = 'sleep 300 & echo $! > bg.pid; echo "ok=1" >> "$DEVOPS_OUTPUT"'
    started = time.monotonic()
    result = await asyncio.wait_for(run_step(steps.run_tests, step_input(rows, {"command": command})), 20)
    assert time.monotonic() - started < 10, "a background child holding stdout must not keep the step open"
    assert result.outputs == {"ok": "1"}
    assert await wait_until_gone(int((ws / "bg.pid").read_text()))


async def test_run_tests_kills_a_leftover_process_group_from_a_crashed_try(steps, rows):
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # the worker keeps it out of the workspace, where a step could forge it
        worker_state_file(steps._settings, rows.run_id, "pgid-step-1").write_text(str(leftover.pid))
        await run_step(steps.run_tests, step_input(rows, {"command": "echo again"}))
        assert leftover.wait(timeout=5) == -signal.SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


async def test_run_tests_notes_in_the_log_that_an_interrupted_try_is_run_again(steps, rows, sqlite_sessions):
    await run_step(steps.run_tests, step_input(rows, {"command": "echo first"}))
    # as if the first try had been interrupted before its command ended (no record, no exit code)
    with sqlite_sessions.begin() as session:
        session.execute(delete(StepAttemptResult).where(StepAttemptResult.run_id == rows.run_id))
    (steps.workspace(rows.run_id) / ".devops" / "exit-step-1").unlink()
    await run_step(steps.run_tests, step_input(rows, {"command": "echo second"}), attempt_env(2))
    chunks = log_chunks(sqlite_sessions, rows.run_id)
    assert [c.seq for c in chunks] == [1, 2], "a retried try appends to the same attempt's log"
    assert chunks[0].content == "first"
    note, line = chunks[1].content.splitlines()
    assert note.startswith("[devops] the previous try of this step was interrupted") and "(try 2)" in note
    assert line == "second"


SECRET = "s3cr3t/Val+ue with space&more"


async def test_run_tests_masks_a_secret_and_its_encodings_in_log_and_outputs(steps, rows, sqlite_sessions):
    add_secret(sqlite_sessions, rows.account_id, "TOKEN", SECRET)
    placeholder = secret_placeholder("__P_", "TOKEN")
    assert placeholder == "__P_TOKEN__"
    command = (
        'echo "plain: $TOKEN"\n'
        'printf %s "$TOKEN" | base64\n'
        '"$PY" -c "import os, urllib.parse as u; t = os.environ[\'TOKEN\']; '
        "print(u.quote(t, safe='')); print(u.quote(t)); print(u.quote_plus(t))\"\n"
        'echo "tok=$TOKEN" >> "$DEVOPS_OUTPUT"\n'
        'echo "b64=$(printf %s "$TOKEN" | base64)" >> "$DEVOPS_OUTPUT"\n'
        'echo "len=${#TOKEN}" >> "$DEVOPS_OUTPUT"\n'
    )
    # a Python the step user may run (a root worker's own may sit under /root)
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    inp = step_input(rows, {"command": command, "env": {"PY": python}},
                     env={"TOKEN": placeholder}, secret_names=["TOKEN"], secret_placeholder_prefix="__P_")
    result = await run_step(steps.run_tests, inp)

    log = log_text(sqlite_sessions, rows.run_id)
    stored = log + "\n" + json.dumps(result.outputs)
    encoded = base64.b64encode(SECRET.encode()).decode()
    forms = [SECRET, encoded, encoded.rstrip("="), quote(SECRET, safe=""), quote(SECRET), quote_plus(SECRET)]
    for form in forms:
        assert form not in stored, form
    assert log.splitlines()[:5] == ["plain: ***", "***", "***", "***", "***"]
    assert result.outputs == {"tok": "***", "b64": "***", "len": str(len(SECRET))}
    assert placeholder not in stored, "the placeholder was replaced by the value before running"


async def test_run_tests_missing_secret_fails_naming_it(steps, rows, sqlite_sessions):
    other = make_run_rows(sqlite_sessions)
    add_secret(sqlite_sessions, other.account_id, "TOKEN", "another-account-value")
    add_secret(sqlite_sessions, rows.account_id, "PRESENT", "present-value")
    inp = step_input(rows, {"command": "touch ran"}, secret_names=["PRESENT", "TOKEN"],
                     secret_placeholder_prefix="__P_")
    err = await step_failure(steps.run_tests, inp)
    assert err.message == "secret(s) not defined in this account: TOKEN"
    assert not (workspace_of(steps._settings, rows) / "ran").exists()


async def test_run_tests_secret_encrypted_with_another_key_fails_clearly(steps, rows, sqlite_sessions):
    with sqlite_sessions.begin() as session:
        session.add(Secret(account_id=rows.account_id, name="OLD",
                           encrypted_value=SecretBox("some-other-secret-key-123456").encrypt("v")))
    err = await step_failure(steps.run_tests, step_input(rows, {"command": "true"}, secret_names=["OLD"]))
    assert "secret 'OLD' cannot be decrypted" in err.message


async def test_run_tests_without_a_command_fails_clearly(steps, rows):
    err = await step_failure(steps.run_tests, step_input(rows, {"command": "  "}))
    assert "`with.command`" in err.message


# ---- checkout ------------------------------------------------------------------------------

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_TERMINAL_PROMPT": "0"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.test", "-c", "init.defaultBranch=main",
         *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True,
    ).stdout.strip()


@dataclasses.dataclass
class Origin:
    bare: Path
    commits: dict[str, str]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """A bare repository: `main` with two commits, `feature` off the first, annotated tag `v1`."""
    root = tmp_path_factory.mktemp("git")
    bare = root / "origin.git"
    work = root / "work"
    git(root, "init", "--quiet", "--bare", "-b", "main", str(bare))
    git(root, "init", "--quiet", "-b", "main", str(work))
    (work / "file.txt").write_text("one\n")
    git(work, "add", "file.txt")
    git(work, "commit", "--quiet", "-m", "first")
    git(work, "tag", "-a", "v1", "-m", "release 1")
    (work / "file.txt").write_text("two\n")
    git(work, "commit", "--quiet", "-am", "second")
    git(work, "checkout", "--quiet", "-b", "feature", "v1")
    (work / "file.txt").write_text("feature\n")
    git(work, "commit", "--quiet", "-am", "feature work")
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "--quiet", "origin", "main", "feature", "v1")
    commits = {name: git(bare, "rev-parse", f"{name}^{{commit}}") for name in ("main", "feature", "v1")}
    assert len(set(commits.values())) == 3
    return Origin(bare=bare, commits=commits)


@pytest.mark.parametrize(
    ("ref", "expected", "branch", "content"),
    [
        ("main", "main", "main", "two\n"),
        ("feature", "feature", "feature", "feature\n"),
        ("v1", "v1", None, "one\n"),
        (None, "main", "main", "two\n"),
    ],
)
async def test_checkout_fetches_the_ref_into_the_workspace_path(steps, rows, origin, ref, expected, branch, content):
    params: dict[str, Any] = {"repository": str(origin.bare), "path": "src"}
    if ref is not None:
        params["ref"] = ref
    result = await run_step(steps.checkout, step_input(rows, params))

    src = workspace_of(steps._settings, rows) / "src"
    assert result.outputs["commit"] == origin.commits[expected]
    assert result.outputs.get("branch") == branch
    assert result.outputs["path"] == "src"
    assert (src / "file.txt").read_text() == content
    assert git(src, "rev-parse", "HEAD") == origin.commits[expected]


async def test_checkout_again_into_the_same_workspace_refetches(steps, rows, origin, sqlite_sessions):
    params = {"repository": str(origin.bare), "path": "src", "ref": "main"}
    first = await run_step(steps.checkout, step_input(rows, params))
    src = workspace_of(steps._settings, rows) / "src"
    (src / "file.txt").write_text("local edit\n")
    again = await run_step(steps.checkout, step_input(rows, params))
    other = await run_step(steps.checkout, step_input(rows, {**params, "ref": "feature"}, step_id="other"))

    assert first.outputs == again.outputs
    assert (src / "file.txt").read_text() == "feature\n"
    assert other.outputs["commit"] == origin.commits["feature"]
    assert f"[devops] checked out {origin.commits['main']}" in log_text(sqlite_sessions, rows.run_id)


async def test_checkout_a_commit_sha(steps, rows, origin):
    sha = origin.commits["feature"]
    result = await run_step(steps.checkout, step_input(rows, {"repository": str(origin.bare), "ref": sha}))
    assert result.outputs["commit"] == sha
    assert "branch" not in result.outputs


async def test_checkout_full_history_with_depth_zero(steps, rows, origin):
    params = {"repository": str(origin.bare), "ref": "main", "depth": 0}
    result = await run_step(steps.checkout, step_input(rows, params))
    ws = workspace_of(steps._settings, rows)
    assert result.outputs["path"] == "."
    assert git(ws, "rev-list", "--count", "HEAD") == "2"


class SlowGitServer:
    """Serves the bare repository over git's dumb HTTP protocol on 127.0.0.1, holding the first
    ``info/refs`` request for ``delay`` seconds (or until released), like a slow remote."""

    def __init__(self, root: Path, delay: float) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        state = {"held": False}
        outer = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if "info/refs" in self.path and not state["held"]:
                    state["held"] = True
                    outer.arrived.set()
                    outer.release.wait(delay)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/origin.git"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_git(origin: Origin) -> Iterator[Any]:
    git(origin.bare, "update-server-info")
    servers: list[SlowGitServer] = []

    def start(delay: float) -> SlowGitServer:
        servers.append(SlowGitServer(origin.bare.parent, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory and not process_gone(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def describe(pids: list[int]) -> list[str]:
    """What is left of ``pids`` (for assertion messages)."""
    left = []
    for pid in pids:
        try:
            left.append(Path(f"/proc/{pid}/stat").read_text().strip())
        except OSError:
            continue
    return left


async def test_checkout_heartbeats_during_a_slow_fetch(steps, rows, origin, slow_git):
    server = slow_git(2.5)
    env = ActivityEnvironment()
    beats: list[float] = []
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())
    started = time.monotonic()
    params = {"repository": server.url, "ref": "main", "depth": 0}
    result = await run_step(steps.checkout, step_input(rows, params), env)

    assert result.outputs["commit"] == origin.commits["main"]
    assert beats[-1] - started >= 2.5, "the fetch was slow"
    gaps = [b - a for a, b in zip([started, *beats], beats, strict=False)]
    assert max(gaps) < 2.0, f"a slow git command must keep heartbeating (gaps {gaps})"


async def test_checkout_cancel_kills_the_running_git(steps, rows, origin, slow_git):
    server = slow_git(60)
    env = ActivityEnvironment()
    params = {"repository": server.url, "ref": "main", "depth": 0, "path": "src"}
    task = asyncio.create_task(run_step(steps.checkout, step_input(rows, params), env))
    assert await asyncio.to_thread(server.arrived.wait, 10)
    src = workspace_of(steps._settings, rows) / "src"
    running = processes_in(src)
    assert running, "git fetch is running in the checkout directory"

    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)
    assert await wait_until_gone(*running), f"cancel must stop git and its helpers: {describe(running)}"


async def test_checkout_missing_ref_fails_saying_git_fetch_failed(steps, rows, origin):
    params = {"repository": str(origin.bare), "ref": "no-such-branch"}
    err = await step_failure(steps.checkout, step_input(rows, params))
    assert err.message.startswith("git fetch failed")
    assert "no-such-branch" in err.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ref", "--upload-pack=touch {marker}"),
        ("ref", "--upload-pack=/usr/bin/touch"),
        ("repository", "--upload-pack=touch {marker}"),
        ("repository", "-u/usr/bin/touch"),
        ("repository", "ext::sh -c touch% {marker}"),
        ("repository", "EXT::sh -c touch% {marker}"),
    ],
)
async def test_checkout_refuses_option_like_refs_and_dangerous_repositories(
        steps, rows, origin, tmp_path, field, value):
    marker = tmp_path / "pwned"
    params = {"repository": str(origin.bare), "ref": "main", field: value.format(marker=marker)}
    err = await step_failure(steps.checkout, step_input(rows, params))
    assert f"`with.{field}`" in err.message
    assert not marker.exists()
    assert not workspace_of(steps._settings, rows).exists(), "nothing was executed in the workspace"


async def test_checkout_path_must_stay_inside_the_workspace(steps, rows, origin):
    err = await step_failure(steps.checkout, step_input(rows, {"repository": str(origin.bare), "path": "../x"}))
    assert "`with.path` must stay inside the workspace" in err.message


# ---- notify --------------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class HookServer:
    """A real HTTP server on 127.0.0.1; the path picks the status code it answers."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                received.append(Received(self.path, dict(self.headers.items()), self.rfile.read(length)))
                status = int(self.path.strip("/").split("/")[0] or 200)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hooks() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


async def test_notify_posts_a_signed_json_payload(steps, rows, hooks):
    hooks.requests.clear()
    params = {"url": f"{hooks.url}/200/hook", "secret": "hook-secret", "payload": {"text": "deployed", "n": 1}}
    result = await run_step(steps.notify, step_input(rows, params, step_id="tell"))

    [request] = hooks.requests
    body = json.loads(request.body)
    assert body["run_id"] == rows.run_id and body["step_id"] == "tell"
    assert body["payload"] == {"text": "deployed", "n": 1}
    assert request.headers["Content-Type"] == "application/json"
    expected = "sha256=" + hmac.new(b"hook-secret", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Devops-Signature-256"], expected)
    assert result.outputs == {"status_code": 200, "delivery": request.headers["X-Devops-Delivery"]}


async def test_notify_delivery_id_is_deterministic_per_run_step_and_attempt(steps, rows, hooks):
    hooks.requests.clear()
    url = f"{hooks.url}/200"
    await run_step(steps.notify, step_input(rows, {"url": url}, step_id="tell"))
    await run_step(steps.notify, step_input(rows, {"url": url}, step_id="tell"), attempt_env(2))
    await run_step(steps.notify, step_input(rows, {"url": url}, step_id="tell", attempt=2))
    first, retried, next_attempt = (r.headers["X-Devops-Delivery"] for r in hooks.requests)
    assert first == retried, "a Temporal retry of the same step attempt keeps the delivery id"
    assert first != next_attempt
    assert "X-Devops-Signature-256" not in hooks.requests[0].headers


async def test_notify_signs_with_a_secret_resolved_in_the_activity(steps, rows, hooks, sqlite_sessions):
    hooks.requests.clear()
    add_secret(sqlite_sessions, rows.account_id, "HOOK", "resolved-hook-secret")
    params = {"url": f"{hooks.url}/200", "secret": secret_placeholder("__S_", "HOOK")}
    inp = step_input(rows, params, secret_names=["HOOK"], secret_placeholder_prefix="__S_")
    await run_step(steps.notify, inp)
    [request] = hooks.requests
    expected = "sha256=" + hmac.new(b"resolved-hook-secret", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Devops-Signature-256"], expected)


@pytest.fixture
async def strict_steps(sqlite_url: str, sqlite_sessions, tmp_path: Path) -> AsyncIterator[tuple[StepActivities, list]]:
    """Steps with private targets refused, whose HTTP client can never reach the network: if
    the refusal failed, the request would land in ``attempted`` instead."""
    attempted: list[httpx.Request] = []

    def guard(request: httpx.Request) -> httpx.Response:
        attempted.append(request)
        raise httpx.ConnectError("the test guard blocks every connection")

    settings = make_test_settings(sqlite_url, tmp_path, notify_allow_private_targets=False)
    client = httpx.AsyncClient(transport=httpx.MockTransport(guard))
    yield StepActivities(settings, sqlite_sessions, client), attempted
    await client.aclose()


async def test_notify_refuses_loopback_when_private_targets_are_not_allowed(rows, hooks, sqlite_url,
                                                                            sqlite_sessions, tmp_path):
    hooks.requests.clear()
    settings = make_test_settings(sqlite_url, tmp_path, notify_allow_private_targets=False)
    steps = StepActivities(settings, sqlite_sessions)
    err = await step_failure(steps.notify, step_input(rows, {"url": f"{hooks.url}/200"}))
    assert "loopback, private or link-local" in err.message
    assert "127.0.0.1" in err.message
    assert hooks.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.10:8080/",
        "https://172.16.0.1/",
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://[fe80::1]/",
        "http://0.0.0.0:9/",
        "http://100.100.100.200/latest/meta-data/",  # shared address space (a cloud metadata service)
        "http://[fd00::1]/",
    ],
)
async def test_notify_refuses_private_and_link_local_targets_before_connecting(strict_steps, rows, url):
    steps, attempted = strict_steps
    err = await step_failure(steps.notify, step_input(rows, {"url": url}), attempt_env(3))
    assert "loopback, private or link-local" in err.message
    assert attempted == []


async def test_notify_public_targets_pass_the_check(strict_steps, rows):
    steps, attempted = strict_steps
    err = await step_failure(steps.notify, step_input(rows, {"url": "http://93.184.216.34/hook"}), attempt_env(3))
    assert "could not reach" in err.message, "refused only by the test's guard transport, never by the check"
    assert [str(r.url) for r in attempted] == ["http://93.184.216.34/hook"]


@pytest.mark.parametrize("url", ["ftp://example.test/", "not a url", "http:///nohost", None])
async def test_notify_needs_an_http_url(strict_steps, rows, url):
    steps, attempted = strict_steps
    err = await step_failure(steps.notify, step_input(rows, {"url": url}))
    assert "`with.url`" in err.message
    assert attempted == []


async def test_notify_client_error_fails_the_step_with_the_status(steps, rows, hooks):
    err = await step_failure(steps.notify, step_input(rows, {"url": f"{hooks.url}/404"}))
    assert err.message == "notify target answered HTTP 404"
    assert err.details[0] == {"status_code": 404}


async def test_notify_redirect_is_not_followed(steps, rows, hooks):
    err = await step_failure(steps.notify, step_input(rows, {"url": f"{hooks.url}/302"}))
    assert "HTTP 302" in err.message


async def test_notify_server_error_is_retried_then_fails_the_step_on_attempt_three(steps, rows, hooks):
    inp = step_input(rows, {"url": f"{hooks.url}/500"})
    for attempt in (1, 2):
        with pytest.raises(ApplicationError) as info:
            await run_step(steps.notify, inp, attempt_env(attempt))
        assert info.value.type != STEP_FAILED and not info.value.non_retryable
        assert "500" in str(info.value)
    err = await step_failure(steps.notify, inp, attempt_env(3))
    assert err.message == "notify target answered HTTP 500"


async def test_notify_unreachable_target_is_retried_then_fails_the_step(steps, rows):
    with closed_port() as port:
        inp = step_input(rows, {"url": f"http://127.0.0.1:{port}/"})
        with pytest.raises(ApplicationError) as info:
            await run_step(steps.notify, inp)
        assert not info.value.non_retryable
        err = await step_failure(steps.notify, inp, attempt_env(3))
    assert "could not reach" in err.message


async def test_notify_error_message_masks_secrets_in_the_url(steps, rows, sqlite_sessions):
    add_secret(sqlite_sessions, rows.account_id, "HOOK_TOKEN", "very-secret-token")
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}/?token=" + secret_placeholder("__S_", "HOOK_TOKEN")
        inp = step_input(rows, {"url": url}, secret_names=["HOOK_TOKEN"], secret_placeholder_prefix="__S_")
        err = await step_failure(steps.notify, inp, attempt_env(3))
    assert "very-secret-token" not in err.message and "***" in err.message


async def test_every_line_written_before_the_exit_reaches_the_log_however_slow_the_log_writes(
        steps, rows, sqlite_sessions, monkeypatch):
    """On a busy machine the pump drains the pipe more slowly than the shell filled it: the
    lines still buffered when the shell exits are read to the end, not cut off after a second."""
    from activities import steps as steps_module

    original = steps_module.StepLogWriter.flush

    def slow_flush(self) -> None:
        time.sleep(0.1)  # 25 flushes of 200 lines: the drain takes ~2.5 s after the exit
        original(self)

    monkeypatch.setattr(steps_module.StepLogWriter, "flush", slow_flush)
    await asyncio.wait_for(run_step(steps.run_tests, step_input(rows, {"command": "seq 1 5000"})), 60)
    numbers = [line for line in log_text(sqlite_sessions, rows.run_id).splitlines() if line.isdigit()]
    assert numbers == [str(i) for i in range(1, 5001)]


async def test_a_background_child_that_keeps_writing_does_not_keep_the_step_open(steps, rows):
    command = '(while :; do echo spam; done) & echo "ok=1" >> "$DEVOPS_OUTPUT"'
    started = time.monotonic()
    result = await asyncio.wait_for(run_step(steps.run_tests, step_input(rows, {"command": command})), 60)
    assert result.outputs == {"ok": "1"}
    assert time.monotonic() - started < 30


async def test_a_cancellation_whose_task_cancel_was_lost_still_stops_the_step(steps, rows, sqlite_sessions):
    """Python 3.11's ``wait_for`` can swallow a task cancellation that lands just as a line is
    read (the suite saw the step go on sleeping): the activity's cancel flag alone stops it."""
    ws = workspace_of(steps._settings, rows)
    command = 'echo $$ > sh.pid; while :; do echo tick; sleep 0.2; done'
    env = ActivityEnvironment()
    task = asyncio.create_task(run_step(steps.run_tests, step_input(rows, {"command": command}), env))
    sh_pid = int(await wait_for_file(ws / "sh.pid"))
    # what ActivityEnvironment.cancel() does, minus the task.cancel() that the race loses
    for running in env._activities:
        running.context.cancelled_event.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=15)
    assert await wait_until_gone(sh_pid)
    assert "[devops] step cancelled" in log_text(sqlite_sessions, rows.run_id)
