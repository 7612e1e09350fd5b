"""``devops hosts``: the account's Docker hosts."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import context, output

app = typer.Typer(help="Docker hosts: list and show.", no_args_is_help=True)


@app.command("list")
def list_hosts(ctx: typer.Context, as_json: output.JsonOption = False) -> None:
    """Docker hosts with their status and counts."""
    page = context.client(ctx).get("/docker/hosts")
    if as_json:
        output.print_json(page)
        return
    grid = output.table("id", "name", "endpoint", "environment", "status", "containers", "images", "last sync")
    for h in page["data"]:
        grid.add_row(str(h["id"]), output.plain(h["name"]), output.plain(h["endpoint"]), output.plain(h["environment"]),
                     output.status_text(h["status"]), str(h["containers"]), str(h["images"]),
                     output.when(h.get("last_synced_at")))
    output.show(grid, "no Docker hosts")


@app.command("show")
def show_host(ctx: typer.Context, host_id: Annotated[int, typer.Argument(metavar="ID")],
              as_json: output.JsonOption = False) -> None:
    """One Docker host: endpoint, status, sync and counts."""
    h = context.client(ctx).get(f"/docker/hosts/{host_id}")
    if as_json:
        output.print_json(h)
        return
    # the name, endpoint and last error are the API's text: never markup
    output.fields([("host", f"{h['id']} {output.plain(h['name'])}"), ("endpoint", output.plain(h["endpoint"])),
                   ("environment", output.plain(h["environment"])), ("status", output.status_text(h["status"])),
                   ("auto sync", f"{h['auto_sync']} every {h['sync_interval_seconds']}s"),
                   ("last sync", output.when(h.get("last_synced_at"))), ("last error", output.plain(h.get("last_error"))),
                   ("containers", h["containers"]), ("images", h["images"]),
                   ("temporal", output.plain(h.get("temporal_ui_url")))])
