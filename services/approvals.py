"""Reviewers' side of approval gates: the inbox of gates waiting on one person, and what the
approval page shows about the gate behind a link.

A gate is the approval of one attempt of one step in one run. Its recipients are the rows of
``step_approval_tokens`` (one per person, minted by ``activities.approvals``); it waits while
that step's row says ``waiting_approval``. Who decided so far is in ``approval_decisions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from db.models import ApprovalDecision, Pipeline, PipelineRun, StepApprovalToken, StepExecution
from domain.statuses import StepStatus

InboxStatus = Literal["pending", "all"]
GateState = Literal["pending", "decided", "expired", "closed"]


@dataclass
class Gate:
    """One gate as one recipient sees it."""

    run_id: int
    run_number: int
    pipeline_id: int
    pipeline: str
    step_id: str
    step_name: str
    attempt: int
    requested_at: datetime
    expires_at: datetime
    recipients: list[str]
    approvals: int
    required: int
    decided_by: list[str]
    state: GateState
    step_status: str
    require_comment: bool = False
    used_at: datetime | None = None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def step_approval(snapshot: dict[str, Any], step_id: str) -> dict[str, Any]:
    """The ``approval`` of the run's own copy of the step ({} when it has none)."""
    for step in snapshot.get("steps") or []:
        if isinstance(step, dict) and step.get("id") == step_id:
            spec = step.get("approval")
            return spec if isinstance(spec, dict) else {}
    return {}


def required_approvals(snapshot: dict[str, Any], step_id: str) -> int:
    """``approval.min_approvals`` of the run's own copy of the step (1 when not set)."""
    try:
        return max(1, int(step_approval(snapshot, step_id).get("min_approvals", 1)))
    except (TypeError, ValueError):
        return 1


def _gates(session: Session, rows: list[Any], now: datetime) -> list[Gate]:
    """Rows of (token, step execution | None, run, pipeline name) → gates with recipients and decisions."""
    if not rows:
        return []
    keys = {(token.run_id, token.step_id, token.attempt) for token, *_ in rows}
    run_ids = {run_id for run_id, _, _ in keys}
    recipients: dict[tuple[int, str, int], list[str]] = {}
    for run_id, step_id, attempt, recipient in session.execute(
            select(StepApprovalToken.run_id, StepApprovalToken.step_id, StepApprovalToken.attempt,
                   StepApprovalToken.recipient).where(StepApprovalToken.run_id.in_(run_ids))
            .order_by(StepApprovalToken.id)):
        recipients.setdefault((run_id, step_id, attempt), []).append(recipient)
    decisions: dict[tuple[int, str, int], list[tuple[str, str]]] = {}
    for run_id, step_id, attempt, decision, decided_by in session.execute(
            select(ApprovalDecision.run_id, ApprovalDecision.step_id, ApprovalDecision.attempt,
                   ApprovalDecision.decision, ApprovalDecision.decided_by)
            .where(ApprovalDecision.run_id.in_(run_ids)).order_by(ApprovalDecision.id)):
        decisions.setdefault((run_id, step_id, attempt), []).append((decision, decided_by))
    gates = []
    for token, step, run, pipeline_name in rows:
        key = (token.run_id, token.step_id, token.attempt)
        decided = decisions.get(key, [])
        status = step.status if step is not None else ""
        if token.used_at is not None or token.recipient.lower() in {who.lower() for _, who in decided}:
            state: GateState = "decided"
        elif _aware(token.expires_at) <= now:
            state = "expired"
        elif status == StepStatus.WAITING_APPROVAL or step is None:  # None: the gate is opening
            state = "pending"
        else:
            state = "closed"
        gates.append(Gate(
            run_id=run.id, run_number=run.run_number, pipeline_id=run.pipeline_id,
            pipeline=pipeline_name or run.pipeline_snapshot.get("name", ""), step_id=token.step_id,
            step_name=(step.name if step is not None and step.name else token.step_id), attempt=token.attempt,
            requested_at=_aware(step.started_at if step is not None and step.started_at else token.created_at),
            expires_at=_aware(token.expires_at), recipients=recipients.get(key, [token.recipient]),
            approvals=sum(1 for decision, _ in decided if decision == "approved"),
            required=required_approvals(run.pipeline_snapshot or {}, token.step_id),
            decided_by=[who for _, who in decided], state=state, step_status=status,
            require_comment=bool(step_approval(run.pipeline_snapshot or {}, token.step_id).get("require_comment")),
            used_at=_aware(token.used_at) if token.used_at else None))
    return gates


def _query() -> Select[Any]:
    return (select(StepApprovalToken, StepExecution, PipelineRun, Pipeline.name)
            .join(PipelineRun, PipelineRun.id == StepApprovalToken.run_id)
            .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
            .outerjoin(StepExecution, and_(StepExecution.run_id == StepApprovalToken.run_id,
                                           StepExecution.step_id == StepApprovalToken.step_id,
                                           StepExecution.attempt == StepApprovalToken.attempt)))


def inbox(session: Session, account_id: int, email: str, *, status: InboxStatus = "pending", limit: int = 50,
          offset: int = 0) -> tuple[list[Gate], int]:
    """The gates addressed to ``email`` (case-insensitive) in the account, newest first, with the
    total count. ``pending``: the link is unused and unexpired and the run still waits at the step;
    ``all``: every gate this person was asked to decide, whatever became of it."""
    now = datetime.now(UTC)
    query = _query().where(StepApprovalToken.account_id == account_id, PipelineRun.account_id == account_id,
                           func.lower(StepApprovalToken.recipient) == email.lower())
    if status == "pending":
        # decided already: by the link (used) or signed in (a decision under this email)
        decided = select(ApprovalDecision.id).where(
            ApprovalDecision.run_id == StepApprovalToken.run_id, ApprovalDecision.step_id == StepApprovalToken.step_id,
            ApprovalDecision.attempt == StepApprovalToken.attempt,
            func.lower(ApprovalDecision.decided_by) == email.lower())
        query = query.where(StepApprovalToken.used_at.is_(None), StepApprovalToken.expires_at > now,
                            StepExecution.status == StepStatus.WAITING_APPROVAL.value, ~decided.exists())
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(StepApprovalToken.id.desc()).limit(limit).offset(offset)).all()
    return _gates(session, list(rows), now), total


def gate_of_token(session: Session, token_hash: str) -> tuple[Gate, str] | None:
    """The gate behind one approval link and its recipient, or None for an unknown link."""
    row = session.execute(_query().where(StepApprovalToken.token_hash == token_hash)).first()
    if row is None:
        return None
    return _gates(session, [row], datetime.now(UTC))[0], row[0].recipient
