"""``devops deploy``: Swarm rollouts (canary, blue/green, rolling): list, status, promote, abort,
pause, resume."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli import context, output

app = typer.Typer(help="Swarm rollouts: status, promote, abort, pause and resume.", no_args_is_help=True)
DeploymentId = Annotated[int, typer.Argument(metavar="ID")]
ReasonOption = Annotated[str, typer.Option("--reason", "-m", help="recorded with the action")]


@app.command("list")
def list_deployments(ctx: typer.Context, as_json: output.JsonOption = False) -> None:
    """The account's rollouts, newest first."""
    page = context.client(ctx).get("/swarm/deployments")
    if as_json:
        output.print_json(page)
        return
    grid = output.table("id", "cluster", "service", "strategy", "status", "image", "created")
    for d in page["data"]:
        grid.add_row(str(d["id"]), str(d["cluster_id"]), output.plain(d["service"]), output.plain(d["strategy"]),
                     output.status_text(d["status"]), output.plain(d.get("image") or "-"), output.when(d["created_at"]))
    output.show(grid, "no deployments")


@app.command("status")
def deployment_status(ctx: typer.Context, deployment_id: DeploymentId, as_json: output.JsonOption = False) -> None:
    """A rollout's state (live from its workflow while it runs) and its event timeline."""
    api = context.client(ctx)
    d = api.get(f"/swarm/deployments/{deployment_id}")
    if as_json:
        output.print_json(d)
        return
    state: dict[str, Any] = d.get("state") or {}
    # names, images and errors are the API's text (an abort reason is typed by someone): never markup
    output.fields([("deployment", d["id"]), ("service", f"{output.plain(d['service'])} on cluster {d['cluster_id']}"),
                   ("strategy", output.plain(d["strategy"])), ("status", output.status_text(d["status"])),
                   ("image", output.plain(d.get("image"))), ("revision", d.get("revision")),
                   ("step", _step(d)), ("weight", state.get("weight")),
                   ("error", output.plain(d.get("error")))])
    events = api.get(f"/swarm/deployments/{deployment_id}/events")
    grid = output.table("when", "event", "result")
    for e in events["data"]:
        grid.add_row(output.when(e["created_at"]), output.plain(e["event_type"]), output.plain(e.get("result")))
    output.show(grid, "no events yet")


def _step(d: dict[str, Any]) -> str | None:
    """``2 of 2 (pause)``: the API's ``current_step`` is an index from 0 into the configured steps."""
    index, steps = d.get("current_step"), (d.get("config") or {}).get("steps") or []
    if index is None or not steps:
        return None if index is None else str(index + 1)
    if index >= len(steps):
        return f"all {len(steps)} done"
    step = steps[index]
    kind = next(iter(step), "?") if isinstance(step, dict) else str(step)
    return f"{index + 1} of {len(steps)} ({output.plain(kind)})"


def _control(ctx: typer.Context, deployment_id: int, action: str, body: dict[str, Any], as_json: bool) -> None:
    result = context.client(ctx).post(f"/swarm/deployments/{deployment_id}/{action}", body)
    if as_json:
        output.print_json(result)
        return
    output.out().print(f"{action}: deployment {result['deployment_id']} is {result['status']}. {result['message']}",
                       markup=False)


@app.command("promote")
def promote(ctx: typer.Context, deployment_id: DeploymentId,
            full: Annotated[bool, typer.Option("--full", help="past every remaining step")] = False,
            reason: ReasonOption = "", as_json: output.JsonOption = False) -> None:
    """Go on past the current pause (--full: to the end)."""
    _control(ctx, deployment_id, "promote", {"full": full, "reason": reason}, as_json)


@app.command("abort")
def abort(ctx: typer.Context, deployment_id: DeploymentId, reason: ReasonOption = "",
          as_json: output.JsonOption = False) -> None:
    """Stop the rollout and go back to the previous revision."""
    _control(ctx, deployment_id, "abort", {"reason": reason}, as_json)


@app.command("pause")
def pause(ctx: typer.Context, deployment_id: DeploymentId, reason: ReasonOption = "",
          as_json: output.JsonOption = False) -> None:
    """Hold the rollout at its current step."""
    _control(ctx, deployment_id, "pause", {"reason": reason}, as_json)


@app.command("resume")
def resume(ctx: typer.Context, deployment_id: DeploymentId, reason: ReasonOption = "",
           as_json: output.JsonOption = False) -> None:
    """Continue a paused rollout."""
    _control(ctx, deployment_id, "resume", {"reason": reason}, as_json)
