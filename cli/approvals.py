"""``devops approve|reject RUN STEP -m COMMENT`` and ``devops approvals`` (the inbox)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import context, output

CommentOption = Annotated[str, typer.Option("--message", "-m", metavar="COMMENT",
                                            help="why (some gates require a comment)")]


def _decide(ctx: typer.Context, run_id: int, step_id: str, decision: str, comment: str, as_json: bool) -> None:
    result = context.client(ctx).post(f"/pipeline_runs/{run_id}/steps/{step_id}/{decision}", {"comment": comment})
    if as_json:
        output.print_json(result)
        return
    output.out().print(f"{result['decision']} step {result['step_id']} of run {result['run_id']}: gate "
                       f"{result['outcome']} ({result['approvals']}/{result['required']} approvals)")


def approve(ctx: typer.Context, run_id: Annotated[int, typer.Argument(metavar="RUN")],
            step_id: Annotated[str, typer.Argument(metavar="STEP")], comment: CommentOption = "",
            as_json: output.JsonOption = False) -> None:
    """Approve a run's gate waiting at STEP (you must be one of its recipients)."""
    _decide(ctx, run_id, step_id, "approve", comment, as_json)


def reject(ctx: typer.Context, run_id: Annotated[int, typer.Argument(metavar="RUN")],
           step_id: Annotated[str, typer.Argument(metavar="STEP")], comment: CommentOption = "",
           as_json: output.JsonOption = False) -> None:
    """Reject a run's gate waiting at STEP: the run fails there."""
    _decide(ctx, run_id, step_id, "reject", comment, as_json)


def approvals(ctx: typer.Context,
              all_: Annotated[bool, typer.Option("--all", help="every gate you were asked to decide, "
                                                               "not only the pending ones")] = False,
              as_json: output.JsonOption = False) -> None:
    """The approval gates waiting on you."""
    page = context.client(ctx).get("/approvals", status="all" if all_ else "pending")
    if as_json:
        output.print_json(page)
        return
    grid = output.table("run", "pipeline", "step", "status", "approvals", "requested", "expires")
    for g in page["data"]:
        grid.add_row(f"{g['run_id']} (#{g['run_number']})", output.plain(g["pipeline"]), output.plain(g["step_id"]),
                     output.plain(g["status"]),
                     f"{g['approvals']}/{g['required']}", output.when(g["requested_at"]), output.when(g["expires_at"]))
    output.show(grid, "no approvals waiting on you")
