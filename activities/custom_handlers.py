"""Registry of handlers for ``type: custom`` steps.

A custom step names its handler with ``with: {handler: <name>, ...}``. Handlers are plain
async functions registered in code::

    @register_custom_handler("my_handler")
    async def my_handler(ctx: CustomStepContext) -> dict[str, str]:
        ...  # return the step's outputs

Raise :class:`CustomStepFailed` for a failure the user should read; anything else is treated
as an infrastructure error and retried by Temporal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CustomStepContext", "CustomStepFailed", "register_custom_handler", "custom_handler", "handler_names"]


class CustomStepFailed(Exception):
    """The step failed for a reason the pipeline author can act on."""


@dataclass
class CustomStepContext:
    run_id: int
    step_id: str
    attempt: int
    params: dict[str, Any]
    env: dict[str, str]
    workspace: Path
    log: Callable[[str], None]


Handler = Callable[[CustomStepContext], Awaitable[dict[str, Any]]]
_HANDLERS: dict[str, Handler] = {}


def register_custom_handler(name: str) -> Callable[[Handler], Handler]:
    def decorator(func: Handler) -> Handler:
        _HANDLERS[name] = func
        return func

    return decorator


def custom_handler(name: str) -> Handler | None:
    return _HANDLERS.get(name)


def handler_names() -> list[str]:
    return sorted(_HANDLERS)


@register_custom_handler("noop")
async def noop(ctx: CustomStepContext) -> dict[str, Any]:
    """Does nothing; echoes its `outputs` parameter back as the step's outputs."""
    outputs = ctx.params.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise CustomStepFailed("noop: `outputs` must be a mapping of names to values")
    return {str(k): v for k, v in outputs.items()}


@register_custom_handler("checksum")
async def checksum(ctx: CustomStepContext) -> dict[str, Any]:
    """SHA-256 over workspace files matching `paths` (glob patterns, default ``**/*``), in a
    stable order; outputs ``sha256`` and ``files`` (the count). Useful as a cache key."""
    patterns = ctx.params.get("paths") or ["**/*"]
    if isinstance(patterns, str):
        patterns = [patterns]
    root = ctx.workspace.resolve()
    files: set[Path] = set()
    for pattern in patterns:
        if not isinstance(pattern, str) or pattern.startswith("/") or ".." in Path(pattern).parts:
            raise CustomStepFailed(f"checksum: path pattern {pattern!r} must be relative to the workspace")
        # A link is skipped: the worker reads these files, and a step's link could point at
        # another account's workspace or the data directory.
        files.update(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink()
                     and root in p.resolve().parents and ".git" not in p.relative_to(root).parts
                     and ".devops" not in p.relative_to(root).parts)
    digest = hashlib.sha256()
    for path in sorted(files):
        content = path.read_bytes()
        # Name and length frame each file, so no two different trees hash the same.
        digest.update(str(path.relative_to(root)).encode() + b"\0" + str(len(content)).encode() + b"\0")
        digest.update(content)
    ctx.log(f"checksum of {len(files)} file(s)")
    return {"sha256": digest.hexdigest(), "files": len(files)}
