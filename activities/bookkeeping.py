"""Read-model bookkeeping: the workflow's progress written to the database.

The PipelineRunWorkflow batches what changed (run status, step attempts, events) and calls
:meth:`RunBookkeeping.record_run_progress` as a local activity at the few points where it
must be visible: when a step starts (together with what the previous step did), and at the
end. Every write is an upsert keyed by domain ids, so a retried call changes nothing twice.
"""


import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
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


def _upsert(dialect: str, table: Table, keys: list[str], *, overwrite: tuple[str, ...] = (),
            keep_if_null: tuple[str, ...] = (), keep_if_empty: tuple[str, ...] = ()) -> Any:
    """INSERT ... ON CONFLICT for SQLite and PostgreSQL, executed with a list of rows. On
    conflict, ``overwrite`` columns take the new value, ``keep_if_null`` (``keep_if_empty``)
    columns keep the stored one when the new one is NULL (an empty string); with none of them
    the stored row is left as it is (DO NOTHING)."""
    statement = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    if not (overwrite or keep_if_null or keep_if_empty):
        return statement.on_conflict_do_nothing(index_elements=keys)
    set_ = {name: statement.excluded[name] for name in overwrite}
    set_.update({name: func.coalesce(statement.excluded[name], table.c[name]) for name in keep_if_null})
    set_.update({name: func.coalesce(func.nullif(statement.excluded[name], ""), table.c[name])
                 for name in keep_if_empty})
    return statement.on_conflict_do_update(index_elements=keys, set_=set_)


@functools.cache
def _statements(dialect: str) -> tuple[Any, Any]:
    """The two upserts, built once per dialect so SQLAlchemy compiles them once."""
    step_upsert = _upsert(dialect, steps, ["run_id", "step_id", "attempt"], overwrite=("position", "status", "outputs"),
                          keep_if_null=("error", "started_at", "finished_at", "reused_from_run_id"),
                          keep_if_empty=("name", "step_type"))
    event_insert = _upsert(dialect, events, ["run_id", "dedupe_key"])
    return step_upsert, event_insert


class RunBookkeeping:
    """Writes with a few set-based statements (no ORM unit of work): this runs several times
    per pipeline run, on the workflow worker's hot path."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    @activity.defn(name="record_run_progress")
    def record_run_progress(self, inp: RecordRunProgressInput) -> None:
        with self._sessions.begin() as session:
            owner = session.execute(select(runs.c.account_id).where(runs.c.id == inp.run_id)).scalar()
            if owner != inp.account_id:
                # The run (or its pipeline) was deleted meanwhile, or the input names another
                # account: write nothing. Failing would only make Temporal retry a hopeless write.
                return
            step_upsert, event_insert = _statements(session.get_bind().dialect.name)
            if inp.run is not None:
                self._apply_run(session, inp.run_id, inp.run)
            if inp.steps:
                session.execute(step_upsert, [self._step_row(inp.run_id, u) for u in inp.steps])
            if inp.events:
                session.execute(event_insert, [
                    {"account_id": inp.account_id, "run_id": inp.run_id, "pipeline_id": inp.pipeline_id,
                     "event_type": e.event_type, "payload": e.payload, "dedupe_key": e.key, "created_at": _ts(e.at)}
                    for e in inp.events
                ])

    @staticmethod
    def _apply_run(session: Session, run_id: int, update: RunUpdate) -> None:
        values: dict[str, Any] = {}
        if update.status is not None:
            values["status"] = update.status
        if update.error is not None:
            values["error"] = update.error
        if update.outputs is not None:
            values["outputs"] = update.outputs
        if update.started_at:
            values["started_at"] = func.coalesce(runs.c.started_at, _ts(update.started_at))
        if update.finished_at:
            values["finished_at"] = _ts(update.finished_at)
        if values:
            session.execute(runs.update().where(runs.c.id == run_id).values(values))

    @staticmethod
    def _step_row(run_id: int, update: StepUpdate) -> dict[str, Any]:
        # A None timestamp or error means "unchanged": the upsert keeps the stored value.
        return {
            "run_id": run_id, "step_id": update.step_id, "attempt": update.attempt, "position": update.position,
            "status": update.status, "name": update.name, "step_type": update.step_type,
            "outputs": update.outputs or {}, "error": update.error, "started_at": _ts(update.started_at),
            "finished_at": _ts(update.finished_at), "reused_from_run_id": update.reused_from_run_id,
        }


runs: Table = PipelineRun.__table__  # type: ignore[assignment]
steps: Table = StepExecution.__table__  # type: ignore[assignment]
events: Table = RunEvent.__table__  # type: ignore[assignment]

