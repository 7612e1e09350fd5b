"""How a pipeline run is answered, and how a sync route starts one: shared by the pipelines,
pipeline runs and schedules routes (which must not import each other)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from adapters.temporal import TemporalGateway
from api.schemas import (
    ApprovalDecisionPublic,
    PipelineRunPublic,
    StepApprovalPublic,
    StepAttemptPublic,
    StepExecutionPublic,
)
from db.models import ApprovalDecision, PipelineRun, RunEvent, StepApprovalToken, StepExecution
from domain.errors import Unavailable
from domain.step_types import FINISHED_RUN_STATUSES
from services import runs as services
from settings import Settings


def _approvals(run: PipelineRun) -> tuple[list[ApprovalDecisionPublic], dict[str, StepApprovalPublic]]:
    """Decisions of the run, and the gates its steps have (had), from the database."""
    session = object_session(run)
    gated = any(s.get("requires_approval") or s.get("requires_trust") or s.get("type") == "code_factory_gate"
                for s in run.pipeline_snapshot.get("steps", []))
    if session is None or not gated:
        return [], {}
    decisions = [
        ApprovalDecisionPublic(step_id=d.step_id, attempt=d.attempt, decision=d.decision, decided_by=d.decided_by,
                               comment=d.comment, created_at=d.created_at)
        for d in session.scalars(select(ApprovalDecision).where(ApprovalDecision.run_id == run.id)
                                 .order_by(ApprovalDecision.id))
    ]
    tokens = session.scalars(select(StepApprovalToken).where(StepApprovalToken.run_id == run.id)).all()
    gates: dict[str, StepApprovalPublic] = {}
    required = {s["id"]: int((s.get("approval") or {}).get("min_approvals", 1))
                for s in run.pipeline_snapshot.get("steps", [])}
    for token in tokens:
        gate = gates.setdefault(token.step_id, StepApprovalPublic(
            recipients=[], expires_at=token.expires_at, required=required.get(token.step_id, 1),
            decisions=[d for d in decisions if d.step_id == token.step_id]))
        gate.recipients.append(token.recipient)
    return decisions, gates


def _steps_public(run: PipelineRun, gates: dict[str, StepApprovalPublic]) -> list[StepExecutionPublic]:
    by_step: dict[str, list[StepExecution]] = defaultdict(list)
    for row in run.steps:
        by_step[row.step_id].append(row)
    result = []
    for position, step in enumerate(run.pipeline_snapshot.get("steps", [])):
        rows = sorted(by_step.get(step["id"], []), key=lambda r: r.attempt)
        latest = rows[-1] if rows else None
        result.append(StepExecutionPublic(
            step_id=step["id"], name=step.get("name") or step["id"], type=step["type"], position=position,
            status=latest.status if latest else "pending", attempts=len(rows),
            outputs=latest.outputs if latest else {}, error=latest.error if latest else None,
            started_at=rows[0].started_at if rows else None, finished_at=latest.finished_at if latest else None,
            reused_from_run_id=latest.reused_from_run_id if latest else None,
            history=[StepAttemptPublic(attempt=r.attempt, status=r.status, outputs=r.outputs, error=r.error,
                                       started_at=r.started_at, finished_at=r.finished_at) for r in rows],
            approval=gates.get(step["id"]),
        ))
    return result


def run_public(run: PipelineRun, temporal: TemporalGateway, *, with_steps: bool = True) -> PipelineRunPublic:
    duration = None
    if run.started_at and run.finished_at:
        duration = (run.finished_at - run.started_at).total_seconds()
    public = PipelineRunPublic(
        id=run.id, pipeline_id=run.pipeline_id, run_number=run.run_number, status=run.status,
        trigger_type=run.trigger_type, trigger_context=run.trigger_context, inputs=run.inputs, outputs=run.outputs,
        error=run.error, workflow_id=run.workflow_id, temporal_ui_url=temporal.ui_url(run.workflow_id),
        retry_of_run_id=run.retry_of_run_id, from_step=run.from_step, created_at=run.created_at,
        started_at=run.started_at, finished_at=run.finished_at, duration_seconds=duration,
        steps=None, a2a_task_id=run.a2a_task_id, a2a_callback_url=run.a2a_callback_url,
        a2a_callback_status=run.a2a_callback_status,
    )
    if with_steps:
        public.approvals, gates = _approvals(run)
        public.steps = _steps_public(run, gates)
    return public


def reconcile_rows(session: Session, temporal: TemporalGateway, runs: list[PipelineRun]) -> None:
    """Correct rows still shown unfinished whose workflow Temporal has closed (terminated from
    its UI, say), so no answer contradicts Temporal. A Temporal hiccup leaves the rows as they are."""
    candidates = [r for r in runs if r.status not in FINISHED_RUN_STATUSES and r.status != "queued"]
    if not candidates:
        return

    async def check() -> list[Any]:
        return await asyncio.gather(*(services.reconcile_with_temporal(temporal, r) for r in candidates),
                                    return_exceptions=True)

    changed = False
    for run, changes in zip(candidates, temporal.call(check), strict=True):
        if not isinstance(changes, dict) or not changes:
            continue
        for key, value in changes.items():
            setattr(run, key, value)
        session.add(RunEvent(account_id=run.account_id, run_id=run.id, pipeline_id=run.pipeline_id,
                             event_type="run_completed", dedupe_key="api-reconciled",
                             payload={"run_id": run.id, "status": run.status, "error": run.error}))
        changed = True
    if changed:
        try:
            session.commit()
        except IntegrityError:  # another request reconciled the same run first, to the same answer
            session.rollback()
            for run in candidates:
                session.refresh(run)


def start_and_describe(session: Session, temporal: TemporalGateway, settings: Settings, run: PipelineRun,
                       reused_steps: dict[str, Any] | None = None) -> PipelineRunPublic:
    """Start the run's workflow from a sync route (the client lives on the event loop)."""
    inp = services.workflow_input(run, settings, reused_steps)
    try:
        temporal.call(services.start_run_workflow, temporal, settings, run, inp)
    except Exception as exc:  # Temporal unreachable or refusing: say so, keep the row honest
        if services.mark_start_failed(session, run, exc):  # False: the outbox reconciler started it meanwhile
            session.commit()
            raise Unavailable(f"run {run.id} was recorded but could not be started: Temporal is unavailable") from exc
        session.commit()
        return run_public(run, temporal)
    # Out of the start outbox; should the API die before this, the reconciler starts it again (idempotent).
    cancelled = services.mark_workflow_started(session, [run.id])
    session.commit()
    if cancelled:  # cancelled while we were starting it: stop what we started
        temporal.call(services.cancel_started_meanwhile, temporal, [run], cancelled)
        session.refresh(run)
    return run_public(run, temporal)

