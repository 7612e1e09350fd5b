"""Read-model bookkeeping: the workflow's progress written to the database.

The PipelineRunWorkflow batches what changed (run status, step attempts, events) and calls
:meth:`RunBookkeeping.record_run_progress` as a local activity at the few points where it
must be visible: when a step starts (together with what the previous step did), and at the
end. Every write is an upsert keyed by domain ids, so a retried call changes nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from db.models import PipelineRun, RunEvent, StepExecution


@dataclass
class StepUpdate:
    step_id: str
    position: int
    attempt: int
    status: str
    name: str = ""
    step_type: str = ""
    outputs: dict[str, Any] | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    reused_from_run_id: int | None = None


@dataclass
class RunUpdate:
    status: str | None = None
    error: str | None = None
    outputs: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass
class EventRecord:
    key: str  # unique per run: makes the insert idempotent
    event_type: str
    payload: dict[str, Any]
    at: str


@dataclass
class RecordRunProgressInput:
    run_id: int
    account_id: int
    pipeline_id: int
    run: RunUpdate | None = None
    steps: list[StepUpdate] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class RunBookkeeping:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    @activity.defn(name="record_run_progress")
    def record_run_progress(self, inp: RecordRunProgressInput) -> None:
        with self._sessions.begin() as session:
            run = session.get(PipelineRun, inp.run_id)
            if run is None or run.account_id != inp.account_id:
                # The run (or its pipeline) was deleted meanwhile, or the input names another
                # account: write nothing. Failing would only make Temporal retry a hopeless write.
                return
            if inp.run is not None:
                self._apply_run(session, inp)
            if inp.steps:
                self._apply_steps(session, inp)
            if inp.events:
                self._apply_events(session, inp)

    @staticmethod
    def _apply_run(session: Session, inp: RecordRunProgressInput) -> None:
        run = session.get(PipelineRun, inp.run_id)
        assert run is not None
        update = inp.run
        assert update is not None
        if update.status is not None:
            run.status = update.status
        if update.error is not None:
            run.error = update.error
        if update.outputs is not None:
            run.outputs = update.outputs
        if update.started_at and run.started_at is None:
            run.started_at = _ts(update.started_at)
        if update.finished_at:
            run.finished_at = _ts(update.finished_at)

    @staticmethod
    def _apply_steps(session: Session, inp: RecordRunProgressInput) -> None:
        keys = {(u.step_id, u.attempt) for u in inp.steps}
        existing = {
            (row.step_id, row.attempt): row
            for row in session.scalars(
                select(StepExecution).where(
                    StepExecution.run_id == inp.run_id,
                    StepExecution.step_id.in_({k[0] for k in keys}),
                )
            )
        }
        for update in inp.steps:
            row = existing.get((update.step_id, update.attempt))
            if row is None:
                row = StepExecution(run_id=inp.run_id, step_id=update.step_id, attempt=update.attempt,
                                    position=update.position)
                session.add(row)
                existing[(update.step_id, update.attempt)] = row
            row.position = update.position
            row.status = update.status
            if update.name:
                row.name = update.name
            if update.step_type:
                row.step_type = update.step_type
            if update.outputs is not None:
                row.outputs = update.outputs
            if update.error is not None:
                row.error = update.error
            if update.started_at:
                row.started_at = _ts(update.started_at)
            if update.finished_at:
                row.finished_at = _ts(update.finished_at)
            if update.reused_from_run_id is not None:
                row.reused_from_run_id = update.reused_from_run_id

    @staticmethod
    def _apply_events(session: Session, inp: RecordRunProgressInput) -> None:
        keys = [e.key for e in inp.events]
        seen = set(
            session.scalars(
                select(RunEvent.dedupe_key).where(RunEvent.run_id == inp.run_id, RunEvent.dedupe_key.in_(keys))
            )
        )
        for event in inp.events:
            if event.key in seen:
                continue
            session.add(
                RunEvent(
                    account_id=inp.account_id,
                    run_id=inp.run_id,
                    pipeline_id=inp.pipeline_id,
                    event_type=event.event_type,
                    payload=event.payload,
                    dedupe_key=event.key,
                    created_at=_ts(event.at),
                )
            )
            seen.add(event.key)
