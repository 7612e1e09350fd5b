"""The stored side of ``Idempotency-Key``: bounding the table (the HTTP side is ``api/idempotency.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import IdempotencyKey


def purge_expired(session: Session, limit: int = 1000) -> int:
    """Delete up to ``limit`` expired keys (for a periodic sweep; expired keys are already
    ignored, so this only bounds the table)."""
    ids = list(session.scalars(select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= datetime.now(UTC))
                               .order_by(IdempotencyKey.id).limit(limit)))
    if ids:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
    session.commit()
    return len(ids)
