"""AI usage: the tokens, cost estimate and latency of every model call of the account's
``claude_execute`` steps, with totals (what the budgets count)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.ai_schemas import AiUsagePage, AiUsagePublic, AiUsageTotals
from api.deps import CurrentCaller, SessionDep
from services import ai_usage as service

router = APIRouter(prefix="/ai_usage", tags=["ai"])


@router.get("", response_model=AiUsagePage, summary="List AI usage")
def list_ai_usage(session: SessionDep, caller: CurrentCaller, run_id: int | None = None,
                  ai_config_id: int | None = None,
                  since: Annotated[datetime | None, Query(description="only calls at or after this time")] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0) -> AiUsagePage:
    """Model calls, newest first, with ``totals`` over every matching call."""
    rows, count, totals = service.list_usage(session, caller.account_id, run_id=run_id, ai_config_id=ai_config_id,
                                             since=since, limit=limit, offset=offset)
    return AiUsagePage(
        data=[AiUsagePublic(id=r.id, ai_config_id=r.ai_config_id, run_id=r.run_id, step_id=r.step_id,
                            attempt=r.attempt, provider=r.provider, model=r.model, input_tokens=r.input_tokens,
                            output_tokens=r.output_tokens, total_tokens=r.input_tokens + r.output_tokens,
                            cost_estimate=r.cost_estimate, latency_ms=r.latency_ms, stop_reason=r.stop_reason,
                            error=r.error, created_at=r.created_at) for r in rows],
        count=count, totals=AiUsageTotals(**vars(totals)))
