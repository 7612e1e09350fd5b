"""``devops runs``: list, show, logs (--follow), cancel, retry."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import context, follow, output

app = typer.Typer(help="Pipeline runs: list, show, logs, cancel and retry.", no_args_is_help=True)

RunId = Annotated[int, typer.Argument(metavar="RUN")]


@app.command("list")
def list_runs(ctx: typer.Context,
              pipeline: Annotated[int | None, typer.Option("--pipeline", "-p", help="only this pipeline's runs")] = None,
              status: Annotated[str | None, typer.Option("--status", "-s", help="pending, queued, running, success, "
                                                                                  "failure or cancelled")] = None,
              limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
              as_json: output.JsonOption = False) -> None:
    """Runs, newest first."""
    page = context.client(ctx).get("/pipeline_runs", pipeline_id=pipeline, status=status, limit=limit)
    if as_json:
        output.print_json(page)
        return
    grid = output.table("run", "pipeline", "#", "status", "trigger", "created", "duration")
    for r in page["data"]:
        grid.add_row(str(r["id"]), str(r["pipeline_id"]), str(r["run_number"]), output.status_text(r["status"]),
                     r["trigger_type"], output.when(r["created_at"]), output.seconds(r.get("duration_seconds")))
    output.show(grid, "no runs")


@app.command("show")
def show_run(ctx: typer.Context, run_id: RunId, as_json: output.JsonOption = False) -> None:
    """One run: status, steps with durations, outputs and errors."""
    run = context.client(ctx).get(f"/pipeline_runs/{run_id}")
    if as_json:
        output.print_json(run)
        return
    output.fields([("run", f"{run['id']} (#{run['run_number']} of pipeline {run['pipeline_id']})"),
                   ("status", output.status_text(run["status"])), ("trigger", output.plain(run["trigger_type"])),
                   ("started", output.when(run.get("started_at"))), ("finished", output.when(run.get("finished_at"))),
                   ("duration", output.seconds(run.get("duration_seconds"))), ("error", output.plain(run.get("error"))),
                   ("temporal", output.plain(run.get("temporal_ui_url")))])
    grid = output.table("step", "type", "status", "attempts", "duration", "outputs / error")
    for s in run.get("steps") or []:
        detail = s.get("error") or ", ".join(f"{k}={v}" for k, v in (s.get("outputs") or {}).items())
        grid.add_row(output.plain(s["step_id"]), output.plain(s["type"]), output.status_text(s["status"]),
                     str(s["attempts"]), output.seconds(output.step_duration(s)), output.plain(detail))
    output.show(grid, "no steps")


@app.command("logs")
def run_logs(
    ctx: typer.Context,
    run_id: RunId,
    step: Annotated[str | None, typer.Option("--step", help="only this step's lines")] = None,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="print lines as they are written until the run "
                                                                  "ends; exit with its outcome")] = False,
    color: Annotated[bool | None, typer.Option("--color/--no-color", help="keep ANSI colours (default: only on "
                                                                          "a terminal)")] = None,
    as_json: output.JsonOption = False,
) -> None:
    """The run's log, each line prefixed by its step and attempt. With --follow: exit 0 success, 1 failure,
    3 cancelled."""
    api = context.client(ctx)
    if follow_:
        raise typer.Exit(follow.follow_logs(api, run_id, step, color, as_json))
    if as_json:
        output.print_json(api.get(f"/pipeline_runs/{run_id}/logs", step_id=step, format="json"))
        return
    text = api.request("GET", f"/pipeline_runs/{run_id}/logs", params={
        k: v for k, v in {"step_id": step, "format": "text"}.items() if v is not None}).text
    keep = sys.stdout.isatty() if color is None else color
    sys.stdout.write(text if keep else output.strip_ansi(text))


@app.command("cancel")
def cancel_run(ctx: typer.Context, run_id: RunId, as_json: output.JsonOption = False) -> None:
    """Ask the run to stop; its status becomes cancelled shortly after."""
    run = context.client(ctx).post(f"/pipeline_runs/{run_id}/cancel")
    if as_json:
        output.print_json(run)
        return
    output.out().print(f"cancelling run {run['id']} (now {run['status']})")


@app.command("retry")
def retry_run(
    ctx: typer.Context,
    run_id: RunId,
    from_step: Annotated[str | None, typer.Option("--from-step", help="re-run from this step, reusing earlier "
                                                                      "steps' outputs")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the new run to its end; exit with its outcome")] = False,
    timeout: Annotated[float | None, typer.Option(min=0, help="with --wait: give up after this many seconds")] = None,
    as_json: output.JsonOption = False,
) -> None:
    """A new run with the same definition and inputs (of a finished run)."""
    api = context.client(ctx)
    run = api.post(f"/pipeline_runs/{run_id}/retry", None, from_step=from_step)
    if wait:
        raise typer.Exit(follow.wait_for_run(api, run, timeout, as_json))
    if as_json:
        output.print_json(run)
        return
    output.out().print(f"started run {run['id']} (#{run['run_number']}), a retry of run {run_id}"
                       + (f" from step {from_step}" if from_step else ""))
