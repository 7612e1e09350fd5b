"""The ``devops`` runner of the CLI tests: typer's CliRunner with the API URL and token in the
environment and an empty config directory (so a developer's own login never leaks in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.main import app

Devops = Callable[..., Result]


@pytest.fixture
def devops(tmp_path: Path) -> Devops:
    """``devops(url, token, *args, **env)``: run one command; an env value of None unsets it."""
    runner = CliRunner()

    def run(url: str | None, token: str | None, *args: str, **env: str | None) -> Result:
        environ = {"DEVOPS_API_URL": url, "DEVOPS_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "config"),
                   "COLUMNS": "200", **env}
        return runner.invoke(app, list(args), env=environ, catch_exceptions=False)

    return run
