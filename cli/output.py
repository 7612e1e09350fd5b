"""What the commands print, and the exit codes they end with.

Human output goes through rich (tables, colours on a terminal); ``--json`` prints the API's JSON
and nothing else on stdout; messages and errors go to stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Exit codes (README "Command line"): a run's outcome, so scripts and other CI can branch on it.
EXIT_SUCCESS = 0
EXIT_FAILURE = 1  # the run failed; also any error answer of the API
EXIT_UNREACHABLE = 2  # the API could not be reached (usage errors exit 2 as well)
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4  # --timeout passed before the run ended, or an unknown outcome
PIPE_WIDTH = 200
OUTCOME_CODES = {"success": EXIT_SUCCESS, "failure": EXIT_FAILURE, "cancelled": EXIT_CANCELLED}

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer (and nothing else on stdout).")]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
STATUS_STYLES = {"success": "green", "completed": "green", "online": "green", "scheduled": "green", "connected": "green",
                 "failure": "red", "failed": "red", "offline": "red", "unreachable": "red", "disconnected": "red",
                 "error": "red", "aborted": "red", "rolled_back": "red",
                 "cancelled": "yellow", "paused": "yellow", "maintenance": "yellow", "waiting_approval": "magenta",
                 "pending": "dim", "queued": "dim", "skipped": "dim",
                 "running": "cyan", "progressing": "cyan", "promoting": "cyan"}


def out() -> Console:
    """stdout, looked up at print time (so test runners that swap sys.stdout see the output).
    Piped, tables are not folded to 80 columns: greps and logs get whole rows."""
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 0) or PIPE_WIDTH
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def outcome_code(status: str | None) -> int:
    return OUTCOME_CODES.get(status or "", EXIT_TIMEOUT)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def plain(value: Any) -> str:
    """A value from the API (a name, an image, an error, a reason someone typed) as literal text in
    rich markup: ``[x]`` is shown as is, and ``[/x]`` does not raise rich's MarkupError."""
    return "" if value is None else escape(str(value))


def status_text(status: str | None) -> str:
    if not status:
        return ""
    style = STATUS_STYLES.get(status)
    return f"[{style}]{plain(status)}[/]" if style else plain(status)


def when(value: str | None) -> str:
    """An API timestamp, shortened to ``YYYY-MM-DD HH:MM:SS`` (UTC as sent)."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes}m{rest:02d}s"


def step_duration(step: dict[str, Any]) -> float | None:
    started, finished = step.get("started_at"), step.get("finished_at")
    if not started or not finished:
        return None
    try:
        return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def show(grid: Table, empty: str = "nothing found") -> None:
    if grid.row_count == 0:
        err().print(empty)
        return
    out().print(grid)


def fields(pairs: list[tuple[str, Any]]) -> None:
    """``name: value`` lines, aligned."""
    width = max(len(name) for name, _ in pairs)
    console = out()
    for name, value in pairs:
        console.print(f"[bold]{name.ljust(width)}[/]  {'-' if value is None or value == '' else value}")
