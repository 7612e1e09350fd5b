"""``devops pipelines``: list, show, import, export, trigger."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli import context, follow, output
from cli.client import CliError

app = typer.Typer(help="Pipelines: list, show, import, export and trigger.", no_args_is_help=True)


@app.command("list")
def list_pipelines(ctx: typer.Context, as_json: output.JsonOption = False,
                   limit: Annotated[int, typer.Option(min=1, max=500)] = 100) -> None:
    """The account's pipelines."""
    page = context.client(ctx).get("/pipelines", limit=limit)
    if as_json:
        output.print_json(page)
        return
    grid = output.table("id", "name", "slug", "type", "active", "steps", "last run #")
    for p in page["data"]:
        grid.add_row(str(p["id"]), output.plain(p["name"]), output.plain(p["slug"]), output.plain(p["pipeline_type"]), "yes" if p["is_active"] else "no",
                     str(len(p["steps"])), str(p["last_run_number"]))
    output.show(grid, "no pipelines")


@app.command("show")
def show_pipeline(ctx: typer.Context, pipeline_id: Annotated[int, typer.Argument(metavar="ID")],
                  as_json: output.JsonOption = False) -> None:
    """One pipeline: its settings, inputs and steps."""
    p = context.client(ctx).get(f"/pipelines/{pipeline_id}")
    if as_json:
        output.print_json(p)
        return
    inputs = ", ".join(f"{name} ({spec.get('type', 'string')})" for name, spec in (p.get("inputs") or {}).items())
    output.fields([("id", p["id"]), ("name", output.plain(p["name"])), ("slug", output.plain(p["slug"])),
                   ("type", output.plain(p["pipeline_type"])),
                   ("active", "yes" if p["is_active"] else "no"), ("triggers", output.plain(", ".join(p["triggers"]))),
                   ("inputs", output.plain(inputs)), ("timeout", f"{p['timeout_minutes']} min"), ("description", output.plain(p["description"]))])
    grid = output.table("#", "step", "type", "if", "approval")
    for s in p["steps"]:
        grid.add_row(str(s["position"]), output.plain(s["id"]), output.plain(s["type"]), output.plain(s.get("if") or ""),
                     "required" if s.get("requires_approval") else "")
    output.show(grid, "no steps")


@app.command("import")
def import_pipeline(ctx: typer.Context,
                    file: Annotated[str, typer.Argument(metavar="FILE", help="a YAML or JSON document; - for stdin")],
                    as_json: output.JsonOption = False) -> None:
    """Create a pipeline from its document (YAML, or JSON for a .json file)."""
    if file == "-":
        content = sys.stdin.buffer.read()
    else:
        try:
            content = Path(file).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    media = "application/json" if file.endswith(".json") else "application/yaml"
    api = context.client(ctx)
    p = api.json_of(api.request("POST", "/pipelines/import", content=content, headers={"Content-Type": media}))
    if as_json:
        output.print_json(p)
        return
    output.out().print(f"imported pipeline {p['id']} ({p['slug']}) with {len(p['steps'])} steps")


@app.command("export")
def export_pipeline(ctx: typer.Context, pipeline_id: Annotated[int, typer.Argument(metavar="ID")],
                    out_file: Annotated[Path | None, typer.Option("-o", "--output", help="write to this file")] = None,
                    as_json: Annotated[bool, typer.Option("--json", help="export as JSON instead of YAML")] = False,
                    ) -> None:
    """The pipeline's document (YAML); importing it again gives the same pipeline."""
    text = context.client(ctx).request("GET", f"/pipelines/{pipeline_id}/export",
                                       params={"format": "json" if as_json else "yaml"}).text
    if out_file is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {out_file}: {exc.strerror or exc}") from None
    output.err().print(f"wrote {out_file}")


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """``k=v`` pairs; the API types each value by the pipeline's declared input."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--input")
        inputs[name.strip()] = value
    return inputs


@app.command("trigger")
def trigger_pipeline(
    ctx: typer.Context,
    pipeline_id: Annotated[int, typer.Argument(metavar="ID")],
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", metavar="NAME=VALUE",
                                                     help="a run input; repeat for several")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run to its end; exit with its outcome")] = False,
    timeout: Annotated[float | None, typer.Option(min=0, help="with --wait: give up after this many seconds "
                                                                 "(exit 4; the run goes on)")] = None,
    as_json: output.JsonOption = False,
) -> None:
    """Start a run now. With --wait: exit 0 success, 1 failure, 3 cancelled, 4 timed out."""
    api = context.client(ctx)
    run = api.post(f"/pipelines/{pipeline_id}/trigger", {"inputs": parse_inputs(inputs or [])})
    if not wait:
        if as_json:
            output.print_json(run)
        else:
            output.out().print(f"started run {run['id']} (#{run['run_number']}) of pipeline {pipeline_id}: "
                               f"{run['status']}")
        return
    if not as_json:
        output.err().print(f"started run {run['id']} (#{run['run_number']}); Temporal: {run['temporal_ui_url']}",
                           markup=False)
    raise typer.Exit(follow.wait_for_run(api, run, timeout, as_json))
