"""``devops schedules``: list (with next fire times), pause, resume."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import context, output

app = typer.Typer(help="Cron schedules of pipelines: list, pause and resume.", no_args_is_help=True)
ScheduleId = Annotated[int, typer.Argument(metavar="ID")]


@app.command("list")
def list_schedules(ctx: typer.Context,
                   pipeline: Annotated[int | None, typer.Option("--pipeline", "-p")] = None,
                   as_json: output.JsonOption = False) -> None:
    """The schedules, with Temporal's state and the next fire times (UTC)."""
    page = context.client(ctx).get("/schedules", pipeline_id=pipeline, limit=200)
    if as_json:
        output.print_json(page)
        return
    grid = output.table("id", "pipeline", "cron", "timezone", "state", "next fires (UTC)", "last run")
    for s in page["data"]:
        last = s.get("last_run")
        grid.add_row(str(s["id"]), str(s["pipeline_id"]), output.plain(s["cron"]), output.plain(s["timezone"]),
                     output.status_text(s["temporal_state"]),
                     "\n".join(output.when(t) for t in s["next_run_times"][:3]) or "-",
                     f"{last['id']} {last['status']}" if last else "-")
    output.show(grid, "no schedules")


def _set_active(ctx: typer.Context, schedule_id: int, active: bool, as_json: bool) -> None:
    s = context.client(ctx).patch(f"/schedules/{schedule_id}", {"is_active": active})
    if as_json:
        output.print_json(s)
        return
    following = f"; next fire {output.when(s['next_run_times'][0])} UTC" if s["next_run_times"] else ""
    output.out().print(f"schedule {s['id']} ({s['cron']}) {'resumed' if active else 'paused'}{following}")


@app.command("pause")
def pause_schedule(ctx: typer.Context, schedule_id: ScheduleId, as_json: output.JsonOption = False) -> None:
    """Pause the schedule (its Temporal Schedule stops firing)."""
    _set_active(ctx, schedule_id, False, as_json)


@app.command("resume")
def resume_schedule(ctx: typer.Context, schedule_id: ScheduleId, as_json: output.JsonOption = False) -> None:
    """Resume a paused schedule."""
    _set_active(ctx, schedule_id, True, as_json)
