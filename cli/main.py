"""The ``devops`` command line: a client of the HTTP API (it imports nothing of the service).

Exit codes: 0 success; 1 an error answer of the API, or a run that failed (``trigger --wait``,
``retry --wait``, ``runs logs --follow``); 2 the API could not be reached, or a usage error;
3 the run was cancelled; 4 ``--timeout`` passed before the run ended.
"""

from __future__ import annotations

from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from cli import approvals, config, deploy, hosts, output, pipelines, runs, schedules
from cli.client import ApiClient, CliError
from cli.context import State


class CliGroup(TyperGroup):
    """Turns the client's errors into one line on stderr and their exit code, for every command."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (CliError, config.ConfigError) as exc:
            output.err().print(f"[red]error:[/] {output.plain(exc)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", output.EXIT_FAILURE)) from None


app = typer.Typer(
    cls=CliGroup, name="devops", no_args_is_help=True, pretty_exceptions_enable=False,
    help="Drive the DevOps orchestrator from a terminal or a script: pipelines, runs, approvals, schedules, "
         "Swarm rollouts and Docker hosts. Exit codes: 0 success, 1 API error or failed run, 2 API unreachable, "
         "3 run cancelled, 4 timed out.",
)


@app.callback()
def root(
    ctx: typer.Context,
    api_url: Annotated[str | None, typer.Option("--api-url", envvar="DEVOPS_API_URL", show_envvar=True,
                                                help="the API, e.g. http://127.0.0.1:8000")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="DEVOPS_TOKEN", show_envvar=True,
                                              help="an API token (dvo_...)")] = None,
) -> None:
    """Options here apply to every command; else the environment, else `devops login`'s config file."""
    ctx.obj = State(api_url=api_url, token=token)


@app.command("login")
def login(
    ctx: typer.Context,
    api_url: Annotated[str | None, typer.Option("--api-url", help="the API, e.g. http://127.0.0.1:8000")] = None,
    token: Annotated[str | None, typer.Option("--token", help="an API token; asked for when missing")] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="check the token with the API first")] = True,
    as_json: output.JsonOption = False,
) -> None:
    """Store the API URL and token in the config file (owner-only, 0600)."""
    state: State = ctx.ensure_object(State)
    url = api_url or state.api_url or config.resolve(None, None).api_url
    secret = token or state.token or typer.prompt("API token", hide_input=True)
    me = None
    if verify:
        api = ApiClient(config.Config(api_url=url, token=secret))
        try:
            me = api.get("/users/me")
        finally:
            api.close()
    path = config.write_file(url, secret)
    if as_json:
        output.print_json({"api_url": url, "config_file": str(path), "user": me})
        return
    who = f" as {me.get('email')} ({me.get('role')})" if me else ""
    output.err().print(f"logged in to {url}{who}; settings saved in {path}", markup=False)


app.add_typer(pipelines.app, name="pipelines")
app.add_typer(runs.app, name="runs")
app.command("approve")(approvals.approve)
app.command("reject")(approvals.reject)
app.command("approvals")(approvals.approvals)
app.add_typer(schedules.app, name="schedules")
app.add_typer(deploy.app, name="deploy")
app.add_typer(hosts.app, name="hosts")


def main() -> None:
    """The console script ``devops``."""
    app()
