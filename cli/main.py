"""Entry point of the ``devops`` console script (filled in by issue 15's CLI work)."""

from __future__ import annotations


def main() -> None:  # replaced by the typer app
    raise SystemExit("devops: not built yet")
