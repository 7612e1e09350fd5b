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
        grid.add_row(str(d["id"]), str(d["cluster_id"]), d["service"], d["strategy"], output.status_text(d["status"]),
                     d.get("image") or "-", output.when(d["created_at"]))
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
    output.fields([("deployment", d["id"]), ("service", f"{d['service']} on cluster {d['cluster_id']}"),
                   ("strategy", d["strategy"]), ("status", output.status_text(d["status"])),
                   ("image", d.get("image")), ("revision", d.get("revision")),
                   ("step", d.get("current_step")), ("weight", state.get("weight")), ("error", d.get("error"))])
    events = api.get(f"/swarm/deployments/{deployment_id}/events")
    grid = output.table("when", "event", "result")
    for e in events["data"]:
        grid.add_row(output.when(e["created_at"]), e["event_type"], e.get("result") or "")
    output.show(grid, "no events yet")


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
