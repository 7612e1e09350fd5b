"""What one sync round records on its managed engine endpoint (a Docker host or a Swarm cluster).

The seed's health rule, the same for both: an engine that cannot be reached is an answer, not a
failure of the round: ``consecutive_failures`` + 1, ``last_error``, status ``disconnected``, then
``error`` from the 5th failure in a row (a host in ``maintenance`` stays so). A round that reached
the engine brings the row back to ``connected`` and writes it only when something changed, so an
idle engine costs no write at all (``last_synced_at`` is the last round that changed something).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from adapters.docker_engine import HostTarget, engine_target, secret_box
from adapters.engine_access import engine_shared
from db.models import ManagedEngineEndpoint
from settings import Settings

#: Consecutive failed rounds after which the status is ``error`` (the seed's rule).
ERROR_AFTER_FAILURES = 5


def round_target(session: Session, settings: Settings, row: ManagedEngineEndpoint) -> HostTarget:
    """The row's engine for a round, scoped to its account when the engine is shared."""
    shared = engine_shared(session, settings, row.account_id, row.endpoint)
    return engine_target(row, secret_box(settings), row.account_id if shared else None)


def record_failed_round(session: Session, row: ManagedEngineEndpoint, message: str) -> tuple[str, int]:
    """Count the failure on the row (committed); its new status and consecutive failures."""
    failures = (row.consecutive_failures or 0) + 1
    status = "error" if failures >= ERROR_AFTER_FAILURES else "disconnected"
    if row.status == "maintenance":
        status = "maintenance"
    model = type(row)
    session.execute(update(model).where(model.id == row.id).values(
        consecutive_failures=failures, last_error=message, status=status, updated_at=model.updated_at))
    session.commit()
    return status, failures


def finish_round(session: Session, row: ManagedEngineEndpoint, *, metrics: dict[str, Any], cursor: int | None,
                 written: int, now: datetime, **observed: Any) -> tuple[str, int]:
    """After a round that reached the engine: the row's health, metrics, events cursor and the
    ``observed`` columns (a cluster's ``swarm_id``) updated when they changed, and ``last_synced_at``
    when anything of the round was written. Not committed. The row's status and the rows written."""
    values: dict[str, Any] = {}
    if row.status not in ("connected", "maintenance"):
        values["status"] = "connected"
    if row.consecutive_failures:
        values["consecutive_failures"] = 0
    if row.last_error is not None:
        values["last_error"] = None
    values.update({name: value for name, value in observed.items() if getattr(row, name) != value})
    if (row.metrics or {}) != metrics:
        values["metrics"] = metrics
    if cursor != row.events_cursor:
        values["events_cursor"] = cursor
    if values or written:
        values["last_synced_at"] = now
        model = type(row)
        session.execute(update(model).where(model.id == row.id).values(updated_at=model.updated_at, **values))
        written += 1
    return values.get("status", row.status), written
