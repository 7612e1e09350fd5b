"""Token usage of model calls (one ``AiUsage`` row per call of a ``claude_execute`` step, failed
calls included) and the sums the budgets compare against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.ai_models import AiUsage
from domain.ai import month_start


@dataclass(frozen=True)
class UsageTotals:
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_estimate: float | None
    calls: int


def record(session: Session, **values: Any) -> AiUsage:
    row = AiUsage(**values)
    session.add(row)
    return row


def _tokens(session: Session, *where: Any) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(AiUsage.input_tokens + AiUsage.output_tokens), 0))
                              .where(*where)) or 0)


def tokens_in_run(session: Session, config_id: int, run_id: int) -> int:
    return _tokens(session, AiUsage.ai_config_id == config_id, AiUsage.run_id == run_id)


def tokens_this_month(session: Session, config_id: int, now: datetime) -> int:
    """Tokens of the config since the start of ``now``'s calendar month (UTC)."""
    return _tokens(session, AiUsage.ai_config_id == config_id, AiUsage.created_at >= month_start(now))


def _filtered(account_id: int, run_id: int | None, ai_config_id: int | None, since: datetime | None) -> Select:
    query = select(AiUsage).where(AiUsage.account_id == account_id)
    if run_id is not None:
        query = query.where(AiUsage.run_id == run_id)
    if ai_config_id is not None:
        query = query.where(AiUsage.ai_config_id == ai_config_id)
    if since is not None:
        query = query.where(AiUsage.created_at >= since)
    return query


def list_usage(session: Session, account_id: int, *, run_id: int | None = None, ai_config_id: int | None = None,
               since: datetime | None = None, limit: int = 50,
               offset: int = 0) -> tuple[list[AiUsage], int, UsageTotals]:
    """The account's usage rows, newest first, with their count and sums over every match."""
    query = _filtered(account_id, run_id, ai_config_id, since)
    sub = query.subquery()
    count, tokens_in, tokens_out, cost = session.execute(select(
        func.count(), func.coalesce(func.sum(sub.c.input_tokens), 0), func.coalesce(func.sum(sub.c.output_tokens), 0),
        func.sum(sub.c.cost_estimate))).one()
    rows = session.scalars(query.order_by(AiUsage.id.desc()).limit(limit).offset(offset)).all()
    totals = UsageTotals(input_tokens=int(tokens_in), output_tokens=int(tokens_out),
                         total_tokens=int(tokens_in) + int(tokens_out),
                         cost_estimate=float(cost) if cost is not None else None, calls=int(count))
    return list(rows), int(count), totals
