"""A2A task links: checking a run's callback settings when it is triggered, and the signed
``pipeline_run.finished`` callback body (delivered by workflows/a2a_callback.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.network_targets import url_problem
from db.models import PipelineRun, Secret
from domain import errors
from settings import Settings


def check_link(session: Session, settings: Settings, account_id: int, *, callback_url: str | None,
               callback_secret: str | None, loc: tuple[str, ...] = ("body",)) -> None:
    """422 naming the field: a callback URL that is not http(s), or internal while private
    targets are not allowed; a callback secret that is not one of the account's secrets."""
    problems: list[dict[str, Any]] = []
    if callback_url is not None:
        parts = urlsplit(callback_url)
        problem = None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "must be an http(s) URL with a host"
        elif not settings.private_targets_allowed:
            try:
                problem = url_problem(callback_url, what="callback_url", timeout=2.0)
            except (TimeoutError, OSError) as exc:
                problem = f"callback_url host cannot be checked: {exc}"
        if problem:
            problems.append({"loc": [*loc, "callback_url"], "type": "value_error", "msg": problem})
    if callback_secret is not None:
        found = session.scalar(select(Secret.id).where(Secret.account_id == account_id,
                                                       Secret.name == callback_secret))
        if found is None:
            problems.append({"loc": [*loc, "callback_secret"], "type": "value_error",
                             "msg": f"no secret named {callback_secret!r} in this account"})
    if problems:
        raise errors.unprocessable(problems)


def link_run(run: PipelineRun, *, a2a_task_id: str | None, callback_url: str | None,
             callback_secret: str | None) -> None:
    run.a2a_task_id = a2a_task_id
    run.a2a_callback_url = callback_url
    run.a2a_callback_secret = callback_secret


def sign(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def run_payload(run: PipelineRun, settings: Settings) -> bytes:
    base = settings.resolved_public_api_url
    payload = {
        "event": "pipeline_run.finished", "a2a_task_id": run.a2a_task_id, "run_id": run.id,
        "run_number": run.run_number, "pipeline_id": run.pipeline_id, "status": run.status,
        "outputs": run.outputs or {}, "error": run.error,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "run_url": f"{base}/pipeline_runs/{run.id}",
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
