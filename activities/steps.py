"""Step handlers: one activity per step type, touching the worker's shell, git and HTTP.

A user-visible step failure (non-zero exit, unreachable ref, a 4xx from a notify target)
raises a non-retryable ``ApplicationError`` of type ``StepFailed`` carrying the step's
outputs; the workflow decides about user-level retries. Anything else (a worker crash, a
database hiccup) is an infrastructure error that Temporal retries.

Secrets never travel through Temporal: the workflow passes placeholders and the names of
the secrets a step references; the activity loads and decrypts them, substitutes them, and
masks them (and their encodings) in everything it writes or returns.
"""


import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.checkout_source import checkout_source
from activities.custom_handlers import CustomStepContext, CustomStepFailed, custom_handler, handler_names
from activities.step_contract import (
    HEARTBEAT_SECONDS,
    StepInput,
    StepResult,
    attempt_id,
    secret_placeholder,
    step_failed,
)
from activities.step_contract import STEP_FAILED as STEP_FAILED  # importable from here as before
from activities.workspaces import (
    STEP_STATE_DIR,
    WorkspaceUnreachable,
    dir_beneath,
    fresh_file_beneath,
    hand_over,
    kill_process_groups,
    make_workspace,
    read_beneath,
    read_process_group,
    record_process_group,
    remove_workspace,
    step_user,
    worker_state_file,
)
from adapters.network_targets import literal_address, parse_git_remote, repository_check, url_problem
from db.crypto import InvalidToken, SecretBox
from db.models import Secret, StepAttemptResult, StepLogChunk
from domain.masking import Masker
from settings import Settings

LOG_FLUSH_SECONDS = 0.2
LOG_FLUSH_LINES = 200
# After the shell exits, output is drained until the pipe is quiet, or past this many bytes
# (a background child that keeps writing) once a heartbeat interval has passed.
EXIT_DRAIN_BYTES = 4 * 1024 * 1024
KILL_GRACE_SECONDS = 3.0
CANCEL_WAIT_SECONDS = 60.0
RESOLVE_TIMEOUT_SECONDS = 10.0


class StepLogWriter:
    """Buffers a step's log lines and writes them as numbered chunks, masked and capped."""

    def __init__(self, sessions: sessionmaker[Session], inp: StepInput, masker: Masker, cap_bytes: int) -> None:
        self._sessions = sessions
        self._inp = inp
        self._masker = masker
        self._cap = cap_bytes
        self._lines: list[str] = []
        self._written = 0
        self._truncated = False
        self._last_flush = time.monotonic()
        with sessions() as session:
            last = session.scalar(
                select(func.max(StepLogChunk.seq)).where(
                    StepLogChunk.run_id == inp.run_id,
                    StepLogChunk.step_id == inp.step_id,
                    StepLogChunk.attempt == inp.attempt,
                )
            )
        self._seq = last or 0
        tries = activity.info().attempt if activity.in_activity() else 1
        if tries > 1:
            # Temporal retried this attempt: the previous try was interrupted (a worker stopped).
            self._lines.append(f"[devops] the previous try of this step was interrupted (the worker running it "
                               f"stopped or lost contact); running the step again (try {tries})")

    def line(self, text: str) -> None:
        if self._truncated:
            return
        text = self._masker.mask(text.rstrip("\n"))
        size = len(text.encode()) + 1
        if self._written + size > self._cap:
            self._truncated = True
            self._lines.append(f"[devops] log truncated: this step's output exceeded {self._cap} bytes")
            return
        self._written += size
        self._lines.append(text)

    def due(self) -> bool:
        return bool(self._lines) and (
            len(self._lines) >= LOG_FLUSH_LINES or time.monotonic() - self._last_flush >= LOG_FLUSH_SECONDS
        )

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._lines:
            return
        content = "\n".join(self._lines)
        self._lines = []
        self._seq += 1
        with self._sessions.begin() as session:
            session.add(StepLogChunk(run_id=self._inp.run_id, step_id=self._inp.step_id,
                                     attempt=self._inp.attempt, seq=self._seq, content=content))

    async def aflush(self) -> None:
        if self._lines:
            await asyncio.to_thread(self.flush)


async def _discard_rest(proc: asyncio.subprocess.Process) -> None:
    """Read the pipe to its end once the process group is gone: a background child cut off
    mid-output leaves data in it, and a pipe never read to EOF is never closed."""
    if proc.stdout is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.stdout.read(), timeout=5)


class StepActivities:
    """The step handlers. Clients and settings are injected so tests hand in real local ones."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._box = SecretBox(settings.secret_key, settings.old_secret_keys)
        self._http = http_client

    # ---- shared plumbing -------------------------------------------------------------

    def workspace(self, run_id: int, account_id: int | None = None) -> Path:
        """The run's workspace (0700; see ``activities.workspaces`` for owner and modes)."""
        try:
            return make_workspace(self._settings, run_id, account_id)
        except WorkspaceUnreachable as exc:
            raise step_failed(str(exc)) from None

    @activity.defn(name="step_remove_workspace")
    async def remove_workspace(self, run_id: int) -> bool:
        """The run ended and the retention is 0: its workspace goes now."""
        return await asyncio.to_thread(remove_workspace, self._settings, run_id)

    def _load_secrets(self, inp: StepInput) -> dict[str, str]:
        if not inp.secret_names:
            return {}
        with self._sessions() as session:
            rows = session.scalars(
                select(Secret).where(Secret.account_id == inp.account_id, Secret.name.in_(inp.secret_names))
            ).all()
        values: dict[str, str] = {}
        for row in rows:
            try:
                values[row.name] = self._box.decrypt(row.encrypted_value)
            except InvalidToken:
                raise step_failed(f"secret '{row.name}' cannot be decrypted with the configured keys") from None
        missing = sorted(set(inp.secret_names) - set(values))
        if missing:
            raise step_failed(f"secret(s) not defined in this account: {', '.join(missing)}")
        return values

    def _prepare(self, inp: StepInput) -> tuple[dict[str, Any], dict[str, str], Masker]:
        """Substitute secret placeholders into params and env; return them with a masker."""
        secrets = self._load_secrets(inp)
        masker = Masker(secrets.values())
        if not secrets:
            return inp.params, dict(inp.env), masker
        replacements = {secret_placeholder(inp.secret_placeholder_prefix, k): v for k, v in secrets.items()}
        pattern = re.compile("|".join(re.escape(k) for k in replacements))

        def substitute(value: Any) -> Any:
            if isinstance(value, str):
                return pattern.sub(lambda m: replacements[m.group(0)], value)
            if isinstance(value, dict):
                return {k: substitute(v) for k, v in value.items()}
            if isinstance(value, list):
                return [substitute(v) for v in value]
            return value

        return substitute(inp.params), {k: substitute(v) for k, v in inp.env.items()}, masker

    def _log_writer(self, inp: StepInput, masker: Masker) -> StepLogWriter:
        return StepLogWriter(self._sessions, inp, masker, self._settings.step_log_cap_bytes)

    def _base_env(self, inp: StepInput, workspace: Path, env: dict[str, str]) -> dict[str, str]:
        """A step's whole environment: built here, never inherited, so none of the worker's own
        settings (DEVOPS_SECRET_KEY, DEVOPS_DATABASE_URL, ...) reach it. HOME is the step's
        own directory in the workspace, not the worker's."""
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(workspace / STEP_STATE_DIR / "home"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "CI": "true",
            "DEVOPS": "true",
            "DEVOPS_WORKSPACE": str(workspace),
            "DEVOPS_RUN_ID": str(inp.run_id),
            "DEVOPS_RUN_NUMBER": str(inp.run_number),
            "DEVOPS_PIPELINE_ID": str(inp.pipeline_id),
            "DEVOPS_STEP_ID": inp.step_id,
            "DEVOPS_STEP_ATTEMPT": str(inp.attempt),
            "DEVOPS_STEP_ATTEMPT_ID": attempt_id(inp),
        }
        base.update({k: str(v) for k, v in env.items()})
        return base

    # ---- durable step outcomes (issue 11 item 4) ---------------------------------------

    def _recorded_outcome(self, inp: StepInput) -> StepAttemptResult | None:
        with self._sessions() as session:
            return session.scalar(select(StepAttemptResult).where(
                StepAttemptResult.run_id == inp.run_id, StepAttemptResult.step_id == inp.step_id,
                StepAttemptResult.attempt == inp.attempt))

    def _record_outcome(self, inp: StepInput, exit_code: int, outputs: dict[str, Any],
                        error: str | None) -> StepAttemptResult:
        """Commit how this attempt's command ended; a row a concurrent try of the same attempt
        committed first wins (the insert does nothing) and is returned instead."""
        table = StepAttemptResult.__table__
        values = {"run_id": inp.run_id, "step_id": inp.step_id, "attempt": inp.attempt, "exit_code": exit_code,
                  "outputs": outputs, "error": error, "finished_at": datetime.now(UTC)}
        with self._sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
            inserted = session.execute(insert.values(**values).on_conflict_do_nothing(
                index_elements=["run_id", "step_id", "attempt"])).rowcount
        if inserted == 1:
            return StepAttemptResult(**values)
        stored = self._recorded_outcome(inp)
        assert stored is not None
        return stored

    async def _replay_outcome(self, inp: StepInput, recorded: StepAttemptResult) -> StepResult:
        """A previous try of this attempt ran the command to its end and recorded it, then the
        worker stopped before Temporal heard: answer with that, never run the command again."""
        with contextlib.suppress(WorkspaceUnreachable, OSError):
            # whatever the finished command left running in its group (the dead try's cleanup)
            _kill_leftover_process_group(worker_state_file(self._settings, inp.run_id,
                                                           f"pgid-{inp.step_id}-{inp.attempt}"))
        log = await asyncio.to_thread(self._log_writer, inp, Masker())
        log.line(f"[devops] this attempt's command already finished (exit code {recorded.exit_code}) in a try "
                 f"whose worker stopped before reporting it; returning its recorded result without running it again")
        await log.aflush()
        if recorded.error is not None:
            raise step_failed(recorded.error, dict(recorded.outputs or {}))
        return StepResult(outputs=dict(recorded.outputs or {}))

    # ---- run_tests -------------------------------------------------------------------

    @activity.defn(name="step_run_tests")
    async def run_tests(self, inp: StepInput) -> StepResult:
        """Run ``with.command`` with ``sh -e`` in the run's workspace, streaming its output into
        the step log. Outputs are ``key=value`` lines written to ``$DEVOPS_OUTPUT``; with
        ``with.junit`` the JUnit XML counts become outputs too.

        How the command ended is committed (``StepAttemptResult``) right after it exits and before
        anything else; a later try of the same attempt finds it and returns it instead of running
        the command again (see the README, "Durability")."""
        recorded = await asyncio.to_thread(self._recorded_outcome, inp)
        if recorded is not None:
            return await self._replay_outcome(inp, recorded)
        if not self._settings.shell_executor_enabled:
            # A document saved before the operator turned the shell executor off still says shell.
            raise step_failed(
                "the shell executor is off on this installation (DEVOPS_ENVIRONMENT is not development and "
                "DEVOPS_SHELL_EXECUTOR is not true): this step would run on the worker's machine. Run it in a "
                "container (`with.executor: docker` with `with.image` or `with.template`), or have the operator "
                "enable shell steps (trusted single-tenant installs only)")
        params, env, masker = await asyncio.to_thread(self._prepare, inp)
        command = params.get("command")
        if not isinstance(command, str) or not command.strip():
            raise step_failed("run_tests needs `with.command`: the shell command to run")
        user = step_user(self._settings, inp.account_id)
        workspace = self.workspace(inp.run_id, inp.account_id)
        cwd = _inside(workspace, params.get("working_directory", "."), "working_directory")
        junit = params.get("junit")
        junit_path = str(_inside(workspace, junit, "junit").relative_to(workspace.resolve())) if junit else None
        output_name = f"{STEP_STATE_DIR}/output-{inp.step_id}-{inp.attempt}"
        exit_name = f"{STEP_STATE_DIR}/exit-{inp.step_id}-{inp.attempt}"
        left = _exit_code_left(workspace, exit_name)
        if left is not None:
            # The command of a try whose worker died ended after all: its own shell wrote the exit
            # code (the few ms between exit and our record are covered too). Record it, answer it.
            outputs, error, _notes = _outcome(left, workspace / output_name, workspace, junit_path, masker)
            recorded = await asyncio.to_thread(self._record_outcome, inp, left, outputs, error)
            return await self._replay_outcome(inp, recorded)
        if activity.in_activity() and activity.info().attempt > 1 and await _run_cancel_requested():
            # Retried because its worker died, but the run was cancelled meanwhile: the cancel
            # reaches this try with a heartbeat's answer; wait for it rather than run the command.
            deadline = time.monotonic() + CANCEL_WAIT_SECONDS
            while time.monotonic() < deadline:
                activity.heartbeat()
                await asyncio.sleep(0.5)
        cwd.mkdir(parents=True, exist_ok=True)
        output_file = fresh_file_beneath(workspace, output_name, user)
        exit_file = fresh_file_beneath(workspace, exit_name, user)
        dir_beneath(workspace, f"{STEP_STATE_DIR}/home")
        # What the worker wrote (a checkout, an artifact, the directories above) becomes the step's.
        await asyncio.to_thread(hand_over, workspace, user)
        pid_file = worker_state_file(self._settings, inp.run_id, f"pgid-{inp.step_id}-{inp.attempt}")
        _kill_leftover_process_group(pid_file)

        proc_env = self._base_env(inp, workspace, env if isinstance(env, dict) else {})
        step_env = params.get("env") or {}
        if not isinstance(step_env, dict):
            raise step_failed("`with.env` must map environment variable names to values")
        proc_env.update({str(k): _env_text(v) for k, v in step_env.items()})
        proc_env["DEVOPS_OUTPUT"] = str(output_file)

        log = await asyncio.to_thread(self._log_writer, inp, masker)
        shell = "bash" if shutil.which("bash") else "sh"
        inner = f"{shell} -e -o pipefail -c" if shell == "bash" else f"{shell} -e -c"
        # The command runs under a shell of its own group that writes its exit code when it ends,
        # even if this worker is gone by then; the command is an argument, never spliced in.
        wrapper = f'{inner} "$1"; code=$?; printf %s "$code" > "$2"; exit "$code"'
        argv = [shell, "-c", wrapper, "devops-step", command, str(exit_file)]
        # A root worker drops to the account's step uid/gid, with no supplementary groups.
        identity = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=proc_env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True, **identity,
        )
        record_process_group(pid_file, proc.pid, run_id=inp.run_id, step_id=inp.step_id, attempt=inp.attempt)
        try:
            await self._pump(proc, log)
            code = await proc.wait()
            # First thing after the exit: make the outcome durable (the window in which a crash
            # re-runs a finished command is this read and one insert).
            outputs, error, notes = _outcome(code, output_file, workspace, junit_path, masker)
            recorded = await asyncio.to_thread(self._record_outcome, inp, code, outputs, error)
        except asyncio.CancelledError:
            log.line("[devops] step cancelled: stopping its processes")
            await _terminate(proc)
            await log.aflush()
            raise
        finally:
            if proc.returncode is None:
                await _terminate(proc)
            _kill_group_quietly(proc.pid)
            pid_file.unlink(missing_ok=True)
        await _discard_rest(proc)
        for note in notes:
            log.line(note)
        await log.aflush()
        if recorded.error is not None:
            raise step_failed(recorded.error, dict(recorded.outputs or {}))
        return StepResult(outputs=dict(recorded.outputs or {}))

    async def _pump(self, proc: asyncio.subprocess.Process, log: StepLogWriter) -> None:
        """Copy the process output into the log, heartbeating so cancellation reaches us."""
        assert proc.stdout is not None
        last_beat = 0.0
        exited_at: float | None = None
        drained = 0  # bytes read since the shell exited
        while True:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), timeout=HEARTBEAT_SECONDS)
            except TimeoutError:
                raw = None
            except ValueError:  # a line longer than the stream limit: take what is buffered
                raw = await proc.stdout.read(64 * 1024)
            if raw == b"":
                break
            if activity.is_cancelled():
                # Python 3.11's wait_for can swallow a cancellation that lands as readline
                # completes; the activity's own flag cannot be lost.
                raise asyncio.CancelledError()
            if raw is not None:
                log.line(raw.decode(errors="replace"))
            now = time.monotonic()
            if proc.returncode is not None:
                # The shell is done but a background child may still hold the pipe open: drain
                # what is there, then end the step (the caller kills what is left of the group).
                # Everything the shell wrote before exiting is read, however long that takes on a
                # busy machine (at most the pipe's and the reader's buffers, far below
                # EXIT_DRAIN_BYTES); only a background child still writing is cut off.
                exited_at = exited_at or now
                drained += len(raw or b"")
                if raw is None or (drained >= EXIT_DRAIN_BYTES and now - exited_at >= HEARTBEAT_SECONDS):
                    break
            if now - last_beat >= HEARTBEAT_SECONDS:
                activity.heartbeat()
                last_beat = now
            if log.due():
                await log.aflush()

    # ---- checkout --------------------------------------------------------------------

    @activity.defn(name="step_checkout")
    async def checkout(self, inp: StepInput) -> StepResult:
        """Clone or fetch ``with.repository`` at ``with.ref`` into the workspace (``with.path``).
        Outputs ``commit`` (the full SHA), ``branch`` (when the ref is a branch) and ``path``.

        With ``with.repository_id`` (or no ``with.repository`` in a run triggered by a repository
        webhook) it clones that GitRepository with its provider credential, the token passed to
        git only through the environment (see ``activities.checkout_source``).

        Unless private targets are allowed, local paths, ``file://`` and hosts on loopback, private
        or link-local addresses are refused (``adapters.network_targets``): a member must not
        clone the worker's own disk or reach its network."""
        params, env, masker = await asyncio.to_thread(self._prepare, inp)
        source = await asyncio.to_thread(checkout_source, self._settings, self._sessions, inp, params)
        if source is not None:
            url, default_ref, masker = source.url, source.ref, source.mask_with(masker)
        else:
            url, default_ref = params.get("repository"), "HEAD"
        if not isinstance(url, str) or not url.strip():
            raise step_failed("checkout needs `with.repository` (a git URL or path), `with.repository_id`, "
                              "or a run triggered by a repository webhook")
        if url.startswith("-"):
            raise step_failed("`with.repository` is not a valid repository URL")
        allow_private = self._settings.private_targets_allowed
        checked = await asyncio.to_thread(repository_check, url, allow_private=allow_private,
                                          timeout=RESOLVE_TIMEOUT_SECONDS)
        if checked.problem:
            named = f"the clone URL of repository {source.full_name}" if source else "`with.repository`"
            raise step_failed(f"checkout refused {named}: {checked.problem}")
        ref = str(params.get("ref") or default_ref)
        if ref.startswith("-") or any(c.isspace() for c in ref):
            raise step_failed(f"`with.ref` {ref!r} is not a valid git ref")
        depth = params.get("depth", 1)
        if not isinstance(depth, int) or depth < 0:
            raise step_failed("`with.depth` must be a whole number (0 fetches the full history)")
        workspace = self.workspace(inp.run_id)
        target = _inside(workspace, params.get("path", "."), "path")
        target.mkdir(parents=True, exist_ok=True)
        log = await asyncio.to_thread(self._log_writer, inp, masker)
        git_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                   "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", **(source.env if source else {})}
        base = ["git", "-c", "protocol.ext.allow=never", "-c", "advice.detachedHead=false",
                *([] if allow_private else _pinned_git_config(url, checked.addresses))]

        async def git(*args: str, check: bool = True) -> tuple[int, str]:
            # Its own process group, so cancelling also stops git's helpers (remote-http, upload-pack).
            proc = await asyncio.create_subprocess_exec(
                *base, *args, cwd=target, env=git_env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
            communicate = asyncio.ensure_future(proc.communicate())
            try:
                # A fetch can take minutes: keep heartbeating so Temporal neither times the step out
                # nor loses the way to deliver a cancellation.
                while not (await asyncio.wait({communicate}, timeout=HEARTBEAT_SECONDS))[0]:
                    activity.heartbeat()
                out, _ = communicate.result()
            except asyncio.CancelledError:
                communicate.cancel()
                await _terminate(proc)
                raise
            text = masker.mask(out.decode(errors="replace"))
            for line in text.splitlines():
                log.line(line)
            activity.heartbeat()
            if check and proc.returncode != 0:
                await log.aflush()
                last = text.strip().splitlines()[-1] if text.strip() else "no output"
                raise step_failed(f"git {args[0]} failed (exit {proc.returncode}): {last}")
            return proc.returncode or 0, text

        if not (target / ".git").exists():
            await git("init", "--quiet")
            await git("remote", "add", "origin", url)
        else:
            await git("remote", "set-url", "origin", url)
        fetch = ["fetch", "--quiet", "--no-tags"]
        if depth:
            fetch += ["--depth", str(depth)]
        try:
            await git(*fetch, "origin", ref)
        except ApplicationError as exc:
            if source is None:
                raise
            raise step_failed(f"{exc.message} ({source.hint})") from None
        await git("checkout", "--quiet", "--force", "FETCH_HEAD")
        _, sha = await git("rev-parse", "HEAD")
        commit = sha.strip().splitlines()[-1]
        outputs: dict[str, Any] = {"commit": commit, "path": str(target.relative_to(workspace)) or "."}
        if source is not None:
            outputs["repository"] = source.full_name
        code, _ = await git("ls-remote", "--exit-code", "--heads", "origin", ref, check=False)
        if ref != "HEAD" and code == 0:
            outputs["branch"] = ref.removeprefix("refs/heads/")
        elif ref == "HEAD":
            _, head = await git("ls-remote", "--symref", "origin", "HEAD", check=False)
            match = re.search(r"ref: refs/heads/(\S+)\s+HEAD", head)
            if match:
                outputs["branch"] = match.group(1)
        log.line(f"[devops] checked out {commit}")
        await log.aflush()
        return StepResult(outputs=outputs)

    # ---- notify ----------------------------------------------------------------------

    @activity.defn(name="step_notify")
    async def notify(self, inp: StepInput) -> StepResult:
        """POST a JSON payload to ``with.url``, signed with HMAC-SHA256 of the body under
        ``with.secret`` (header ``X-Devops-Signature-256: sha256=<hex>``). Loopback, private
        and link-local targets are refused unless the settings allow them."""
        params, _env, masker = await asyncio.to_thread(self._prepare, inp)
        url = params.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise step_failed("notify needs `with.url`: an http(s) URL")
        if not self._settings.private_targets_allowed:
            await refuse_private_target(url)
        payload = params.get("payload", {})
        body = json.dumps(
            {"run_id": inp.run_id, "run_number": inp.run_number, "pipeline_id": inp.pipeline_id,
             "step_id": inp.step_id, "payload": payload},
            separators=(",", ":"), sort_keys=True,
        ).encode()
        delivery = f"run-{inp.run_id}-{inp.step_id}-{inp.attempt}"
        headers = {"Content-Type": "application/json", "User-Agent": "devops-orchestrator",
                   "X-Devops-Event": "pipeline.notify", "X-Devops-Delivery": delivery}
        secret = params.get("secret")
        if secret:
            digest = hmac.new(str(secret).encode(), body, hashlib.sha256).hexdigest()
            headers["X-Devops-Signature-256"] = f"sha256={digest}"
        client = self._http or httpx.AsyncClient()
        try:
            response = await client.post(url, content=body, headers=headers, timeout=30, follow_redirects=False)
        except httpx.HTTPError as exc:
            if activity.info().attempt >= 3:
                raise step_failed(f"notify could not reach {masker.mask(url)}: {type(exc).__name__}") from None
            raise ApplicationError(f"notify target unreachable: {type(exc).__name__}", type="NotifyUnreachable") from None
        finally:
            if self._http is None:
                await client.aclose()
        if response.status_code >= 500 and activity.info().attempt < 3:
            raise ApplicationError(f"notify target answered {response.status_code}", type="NotifyServerError")
        if response.status_code >= 300:
            raise step_failed(f"notify target answered HTTP {response.status_code}",
                              {"status_code": response.status_code})
        return StepResult(outputs={"status_code": response.status_code, "delivery": delivery})

    # ---- custom ----------------------------------------------------------------------

    @activity.defn(name="step_custom")
    async def custom(self, inp: StepInput) -> StepResult:
        """Run the handler named by ``with.handler`` from the custom handler registry."""
        name = inp.params.get("handler")
        handler = custom_handler(str(name)) if name else None
        if handler is None:
            raise step_failed(
                f"no custom handler named {name!r} is registered; registered: {', '.join(handler_names())}"
            )
        params, env, masker = (
            await asyncio.to_thread(self._prepare, inp) if inp.secret_names else (inp.params, inp.env, Masker())
        )
        log_lines: list[str] = []
        ctx = CustomStepContext(run_id=inp.run_id, step_id=inp.step_id, attempt=inp.attempt, params=params,
                                env=env, workspace=self._settings.resolved_workspace_dir / f"run-{inp.run_id}",
                                log=log_lines.append)
        try:
            outputs = await handler(ctx)
        except CustomStepFailed as exc:
            outputs, failure = {}, str(exc)
        else:
            failure = None
        if log_lines or failure:
            log = await asyncio.to_thread(self._log_writer, inp, masker)
            for line in [*log_lines, *([f"[devops] {failure}"] if failure else [])]:
                log.line(line)
            await log.aflush()
        if failure:
            raise step_failed(masker.mask(failure))
        return StepResult(outputs=masker.mask_value(outputs or {}))


# ---- helpers ---------------------------------------------------------------------------


def _env_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _inside(root: Path, relative: Any, field_name: str) -> Path:
    """Resolve a user path under the workspace, refusing escapes."""
    if not isinstance(relative, str):
        raise step_failed(f"`with.{field_name}` must be a path relative to the workspace")
    path = (root / relative).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise step_failed(f"`with.{field_name}` must stay inside the workspace")
    return path


_HEREDOC = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)<<(\S+)$")


def _read_outputs(path: Path) -> dict[str, str]:
    """``key=value`` lines, plus GitHub's ``key<<DELIM`` multi-line form. ``path`` is
    ``<workspace>/.devops/<file>``, the step's to write: read without following a link the step
    may have put there (it could point at another workspace or the data directory)."""
    outputs: dict[str, str] = {}
    workspace = path.parent.parent
    raw = read_beneath(workspace, path.relative_to(workspace))
    lines = raw.decode(errors="replace").splitlines() if raw is not None else []
    i = 0
    while i < len(lines):
        line = lines[i]
        heredoc = _HEREDOC.match(line)
        if heredoc:
            key, delimiter = heredoc.groups()
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            outputs[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            if key.strip():
                outputs[key.strip()] = value
        i += 1
    return outputs


def _junit_counts(workspace: Path, relative: str) -> dict[str, int]:
    # The step wrote the report: read it without following links (see ``_read_outputs``).
    raw = read_beneath(workspace.resolve(), relative)
    if raw is None:
        raise step_failed(f"JUnit report not found at {Path(relative).name}")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise step_failed(f"JUnit report is not valid XML: {exc}") from None
    suites = [root] if root.tag == "testsuite" else root.findall(".//testsuite")
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", suite.get("disabled", 0)) or 0)
    return {"total": total, "failed": failed, "skipped": skipped, "passed": total - failed - skipped}


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL after a grace period."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=KILL_GRACE_SECONDS)
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), timeout=KILL_GRACE_SECONDS)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_group_quietly(pgid: int) -> None:
    """Leave no background child of the step behind."""
    _signal_group(pgid, signal.SIGKILL)


async def _run_cancel_requested() -> bool:
    """Whether this activity's run was asked to cancel (a retried try only: one history read)."""
    info = activity.info()
    try:
        handle = activity.client().get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_execution_cancel_requested_event_attributes"):
                return True
    except (RuntimeError, RPCError):  # no client (a unit test's environment), Temporal unreachable
        return False
    return False


def _exit_code_left(workspace: Path, relative: str) -> int | None:
    """The exit code an earlier try's command wrote (see run_tests' wrapper), if it ended."""
    raw = read_beneath(workspace, relative, limit=16)
    text = raw.decode(errors="replace").strip() if raw else ""
    return int(text) if text.isdigit() else None


def _outcome(code: int, output_file: Path, workspace: Path, junit_path: str | None,
             masker: Masker) -> tuple[dict[str, Any], str | None, list[str]]:
    """What a finished command amounts to: its outputs, the step's error (None: success) and
    notes for the log."""
    outputs = masker.mask_value(_read_outputs(output_file))
    notes: list[str] = []
    if junit_path is not None:
        try:
            outputs.update(_junit_counts(workspace, junit_path))
        except ApplicationError as exc:
            if code == 0:
                return {}, exc.message, []
            # The exit code is the failure to report; the missing report is only a note.
            notes.append(f"[devops] {exc.message}")
    if code != 0:
        notes.append(f"[devops] command exited with code {code}")
        return outputs, f"command exited with code {code}", notes
    return outputs, None, notes


def _kill_leftover_process_group(pid_file: Path) -> None:
    """A worker that died mid-step leaves its step's processes running; kill them first (the
    whole group, and only if the number still names the group that try started)."""
    record = read_process_group(pid_file)
    if record is not None:
        kill_process_groups([record], grace=0)
    pid_file.unlink(missing_ok=True)


def _pinned_git_config(url: str, addresses: tuple[Any, ...]) -> list[str]:
    """git options that keep a checkout on the addresses ``repository_check`` approved: only the
    network protocols, no redirects (a redirect could lead anywhere), and for http(s) a name
    pinned to the checked addresses so a second DNS answer cannot point git somewhere internal.
    ssh and git:// resolve the name again themselves: for them the check is best-effort."""
    options = ["protocol.allow=never", *(f"protocol.{name}.allow=always" for name in ("https", "http", "ssh", "git")),
               "http.followRedirects=false"]
    remote = parse_git_remote(url)
    if remote.scheme in ("http", "https") and addresses and literal_address(remote.host) is None:
        pinned = ",".join(f"[{a}]" if a.version == 6 else str(a) for a in addresses)
        options.append(f"http.curloptResolve={remote.host}:{remote.port}:{pinned}")
    return [part for option in options for part in ("-c", option)]


async def refuse_private_target(url: str, what: str = "notify target") -> None:
    """Fail the step when ``url``'s host is internal (the rule: ``adapters.network_targets``)."""
    problem = await asyncio.to_thread(url_problem, url, what=what)
    if problem:
        raise step_failed(problem)


def utc_iso() -> str:
    return datetime.now(UTC).isoformat()
