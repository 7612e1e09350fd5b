"""The import rule of ARCHITECTURE.md, enforced: layers import only downwards, no module
imports ``api`` outside ``api/``, no import cycle, and the worker loads no web framework."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("architecture", ROOT / "scripts" / "architecture.py")
architecture = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("architecture", architecture)
_spec.loader.exec_module(architecture)


def test_no_module_outside_api_imports_api() -> None:
    edges, _ = architecture.import_graph()
    leaks = sorted(f"{m} -> {t}" for m, ts in edges.items() if not m.startswith("api") for t in ts
                   if t == "api" or t.startswith("api."))
    assert leaks == []


def test_layers_import_only_what_the_rule_allows() -> None:
    edges, external = architecture.import_graph()
    assert architecture.violations(edges, external) == []


def test_there_is_no_import_cycle() -> None:
    edges, _ = architecture.import_graph()
    assert architecture.cycles(edges) == []


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path: Path) -> None:
    for package in architecture.PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "domain" / "a.py").write_text("from domain import b\n")
    (tmp_path / "domain" / "b.py").write_text("def f():\n    from domain.a import x\n")
    (tmp_path / "api" / "main.py").write_text("app = None\n")
    (tmp_path / "domain" / "c.py").write_text("import fastapi\nfrom api.main import app\n")
    edges, external = architecture.import_graph(tmp_path)
    assert architecture.cycles(edges) == [["domain.a", "domain.b"]]
    broken = architecture.violations(edges, external)
    assert any("domain.c imports api.main" in line for line in broken)
    assert any("domain.c imports fastapi" in line for line in broken)


def test_importing_the_worker_loads_no_web_framework() -> None:
    loaded = architecture.modules_loaded_by("import worker")
    assert loaded["fastapi"] is False and loaded["starlette"] is False
