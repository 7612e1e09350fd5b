"""Following a run to its end: the step progress of ``trigger --wait`` and ``retry --wait``, and
the live log of ``runs logs --follow``. Both return the exit code of the run's outcome
(:data:`cli.output.OUTCOME_CODES`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.live import Live
from rich.table import Table

from cli import output
from cli.client import ApiClient, ApiUnreachable

FINISHED = frozenset(output.OUTCOME_CODES)
POLL_SECONDS = 1.0  # the API's ?wait= answers at once when the run ends, else after this
RECONNECTS = 5


def _is_tty() -> bool:
    return sys.stdout.isatty()


def _steps_table(run: dict[str, Any]) -> Table:
    grid = output.table("step", "status", "attempts", "duration",
                        title=f"run {run['id']} (#{run.get('run_number')}) {run.get('status')}")
    for step in run.get("steps") or []:
        grid.add_row(output.plain(step["step_id"]), output.status_text(step["status"]), str(step.get("attempts", 0)),
                     output.seconds(output.step_duration(step)))
    return grid


def _plain_changes(run: dict[str, Any], seen: dict[str, str]) -> None:
    """One line per status change of the run or a step (for logs and pipes, not terminals)."""
    console = output.err()
    if seen.get("") != run.get("status"):
        seen[""] = run.get("status") or ""
        console.print(f"run {run['id']}: {run.get('status')}")
    for step in run.get("steps") or []:
        status = step["status"]
        if seen.get(step["step_id"], "pending") == status:
            continue
        seen[step["step_id"]] = status
        took = output.step_duration(step)
        suffix = f" ({output.seconds(took)})" if took is not None else ""
        console.print(f"  step {step['step_id']}: {status}{suffix}")
        if status == "waiting_approval":
            console.print(f"    approve with: devops approve {run['id']} {step['step_id']} -m COMMENT")


def summarize(run: dict[str, Any]) -> None:
    """The outcome in words; a failure names each failed step and its error."""
    console = output.out()
    status = run.get("status")
    took = output.seconds(run.get("duration_seconds"))
    console.print(f"run {run['id']} (#{run.get('run_number')}) {output.status_text(status)} in {took}")
    if status == "failure":
        failed = [step for step in run.get("steps") or [] if step["status"] == "failure"]
        for step in failed:
            console.print(f"  step {step['step_id']} failed: {step.get('error') or 'no error recorded'}",
                          markup=False)
        if run.get("error") and not failed:
            console.print(f"  error: {run['error']}", markup=False)


def wait_for_run(api: ApiClient, run: dict[str, Any], timeout: float | None, as_json: bool) -> int:
    """Follow ``run`` until it ends or ``timeout`` seconds pass; the exit code of its outcome."""
    deadline = None if timeout is None else time.monotonic() + timeout
    live = Live(_steps_table(run), console=output.out(), auto_refresh=False, transient=False) \
        if not as_json and _is_tty() else None
    seen: dict[str, str] = {}
    timed_out = False
    if live is not None:
        live.start()
    try:
        while run.get("status") not in FINISHED:
            if live is not None:
                live.update(_steps_table(run), refresh=True)
            elif not as_json:
                _plain_changes(run, seen)
            wait = POLL_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    timed_out = True
                    break
            run = api.get(f"/pipeline_runs/{run['id']}", wait=round(wait, 3))
        if live is not None:
            live.update(_steps_table(run), refresh=True)
        elif not as_json:
            _plain_changes(run, seen)
    finally:
        if live is not None:
            live.stop()
    if as_json:
        output.print_json(run)
    if timed_out:
        output.err().print(f"timed out after {timeout:g}s: run {run['id']} is still {run.get('status')} "
                           f"(follow it with `devops runs logs {run['id']} --follow`)")
        return output.EXIT_TIMEOUT
    if not as_json:
        summarize(run)
    return output.outcome_code(run.get("status"))


def follow_logs(api: ApiClient, run_id: int, step: str | None, color: bool | None, as_json: bool) -> int:
    """Print the run's log lines as they are written until the run ends (the API's ``end``
    event); a dropped stream resumes after the last line received (``Last-Event-ID``)."""
    keep_ansi = _is_tty() if color is None else color
    last_id: str | None = None
    failures = 0
    while True:
        try:
            for event in api.stream_events(f"/pipeline_runs/{run_id}/logs/stream", last_id):
                failures = 0
                data = json.loads(event.data)
                if event.event == "end":
                    if as_json:
                        output.json_line({"event": "end", "data": data})
                    else:
                        error = f": {data['error']}" if data.get("error") else ""
                        output.err().print(f"run {run_id} ended: {data.get('status')}{error}", markup=False)
                    return output.outcome_code(data.get("status"))
                if event.event != "log":
                    continue
                last_id = event.id or last_id
                if step is not None and data.get("step_id") != step:
                    continue
                if as_json:
                    output.json_line({"event": "log", "id": event.id, "data": data})
                    continue
                line = data.get("line", "")
                if not keep_ansi:
                    line = output.strip_ansi(line)
                sys.stdout.write(f"[{data.get('step_id')}#{data.get('attempt')}] {line}\n")
                sys.stdout.flush()
        except ApiUnreachable:
            failures += 1
            if last_id is None and failures == 1 or failures > RECONNECTS:
                raise
        else:
            failures += 1  # closed without `end`: the API restarted; resume where we were
            if failures > RECONNECTS:
                output.err().print(f"the log stream of run {run_id} kept closing before the run ended")
                return output.EXIT_TIMEOUT
        time.sleep(min(2.0, 0.25 * 2 ** failures))
