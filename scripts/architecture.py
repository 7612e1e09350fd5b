"""The layering, measured: the import graph of the service's own modules, read from source.

Used by ``tests/test_architecture.py`` (the import rule) and, run as a script, prints the
figures ARCHITECTURE.md and the issue's closing notes quote::

    .venv/bin/python scripts/architecture.py

Every ``import`` counts, including the ones inside functions and under ``TYPE_CHECKING``:
a lazy import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("domain", "db", "adapters", "services", "activities", "workflows", "api", "cli")
TOP_MODULES = ("settings", "worker")

# Which of our packages each layer may import (itself always allowed). Third-party rules
# for the pure layer are in FORBIDDEN_THIRD_PARTY.
ALLOWED: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "settings": frozenset(),
    "db": frozenset({"domain", "settings"}),
    "adapters": frozenset({"domain", "db", "settings"}),
    "services": frozenset({"domain", "db", "adapters", "settings", "workflows"}),
    "activities": frozenset({"domain", "db", "adapters", "services", "settings", "workflows"}),
    "workflows": frozenset({"domain", "activities"}),
    "api": frozenset({"domain", "db", "adapters", "services", "settings", "workflows", "activities"}),
    "worker": frozenset({"domain", "db", "adapters", "services", "settings", "workflows", "activities"}),
    # the command line is a client of the HTTP API: it runs where none of the service is installed
    "cli": frozenset(),
}
FORBIDDEN_THIRD_PARTY: dict[str, frozenset[str]] = {
    # pure: no web framework, database, Temporal, engine or HTTP client in the domain
    "domain": frozenset({"fastapi", "starlette", "sqlalchemy", "temporalio", "docker", "httpx", "requests",
                         "github", "gitlab", "psycopg"}),
    "services": frozenset({"fastapi", "starlette"}),
    "adapters": frozenset({"fastapi", "starlette"}),
    "activities": frozenset({"fastapi", "starlette"}),
    "workflows": frozenset({"fastapi", "starlette", "sqlalchemy", "docker", "httpx", "requests"}),
    "cli": frozenset({"fastapi", "starlette", "sqlalchemy", "temporalio", "docker", "psycopg"}),
}


def source_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the service (tests, scripts, bench excluded)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if "migrations" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    for name in TOP_MODULES:
        if (root / f"{name}.py").exists():
            found[name] = root / f"{name}.py"
    return found


def _imported_names(path: Path, module: str) -> Iterable[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between our modules, third-party top-level packages each module imports)."""
    files = source_files(root)

    def ours(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in files}
    external: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for name, _line in _imported_names(path, module):
            target = ours(name)
            if target is not None:
                if target != module:
                    edges[module].add(target)
            elif name:
                external[module].add(name.split(".")[0])
    return edges, external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (each is at least one cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative Tarjan: no recursion limit on deep graphs
        nonlocal counter
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def layer_of(module: str) -> str:
    return module.split(".")[0]


def violations(edges: dict[str, set[str]], external: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the layering rule, as readable sentences."""
    problems = []
    for module, targets in sorted(edges.items()):
        layer = layer_of(module)
        allowed = ALLOWED.get(layer, frozenset())
        for target in sorted(targets):
            other = layer_of(target)
            if other != layer and other not in allowed:
                problems.append(f"{module} imports {target}: {layer} may import only "
                                f"{', '.join(sorted(allowed)) or 'itself'}")
        for package in sorted(external[module] & FORBIDDEN_THIRD_PARTY.get(layer, frozenset())):
            problems.append(f"{module} imports {package}: not allowed in {layer}")
    return problems


def modules_loaded_by(statement: str) -> dict[str, object]:
    """What ``statement`` loads in a fresh interpreter: module counts and web-framework presence."""
    code = (f"import sys, json\n{statement}\n"
            "ours = [m for m in sys.modules if m.split('.')[0] in %r]\n"
            "print(json.dumps({'total': len(sys.modules), 'ours': len(ours),"
            " 'fastapi': 'fastapi' in sys.modules, 'starlette': 'starlette' in sys.modules}))"
            % ((*PACKAGES, *TOP_MODULES),))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def largest_modules(root: Path = ROOT, count: int = 5) -> list[tuple[int, str]]:
    sizes = [(len(path.read_text().splitlines()), str(path.relative_to(root)))
             for path in source_files(root).values()]
    return sorted(sizes, reverse=True)[:count]


def main() -> None:
    edges, external = import_graph()
    found = cycles(edges)
    print(f"modules: {len(edges)}")
    print("largest modules (lines): " + ", ".join(f"{path} {lines}" for lines, path in largest_modules()))
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    broken = violations(edges, external)
    print(f"layering violations: {len(broken)}")
    for line in broken:
        print("  " + line)
    print(f"import worker loads: {modules_loaded_by('import worker')}")


if __name__ == "__main__":
    main()
