"""``RunBookkeeping.record_run_progress`` writes the read model with idempotent upserts, on
SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.bookkeeping import EventRecord, RecordRunProgressInput, RunBookkeeping, RunUpdate, StepUpdate
from db.models import PipelineRun, RunEvent, StepExecution
from tests.activities.conftest import RunRows, make_run_rows

T0 = "2030-01-02T03:04:05+00:00"
T1 = "2030-01-02T03:04:09.250000+00:00"


def record(sessions: sessionmaker[Session], inp: RecordRunProgressInput) -> None:
    ActivityEnvironment().run(RunBookkeeping(sessions).record_run_progress, inp)


def progress(rows: RunRows, **kwargs: Any) -> RecordRunProgressInput:
    return RecordRunProgressInput(run_id=rows.run_id, account_id=rows.account_id,
                                  pipeline_id=rows.pipeline_id, **kwargs)


def snapshot(sessions: sessionmaker[Session], run_id: int) -> dict[str, Any]:
    """Everything bookkeeping writes for one run, as plain values."""
    with sessions() as session:
        run = session.get(PipelineRun, run_id)
        assert run is not None
        steps = session.scalars(select(StepExecution).where(StepExecution.run_id == run_id)
                                .order_by(StepExecution.id)).all()
        events = session.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)).all()
        return {
            "run": (run.status, run.error, run.outputs, run.started_at, run.finished_at),
            "steps": [(s.id, s.step_id, s.position, s.name, s.step_type, s.attempt, s.status, s.outputs, s.error,
                       s.started_at, s.finished_at, s.reused_from_run_id) for s in steps],
            "events": [(e.id, e.account_id, e.pipeline_id, e.event_type, e.payload, e.dedupe_key, e.created_at)
                       for e in events],
        }


def step_started(**overrides: Any) -> StepUpdate:
    values: dict[str, Any] = {"step_id": "build", "position": 0, "attempt": 1, "status": "running",
                              "name": "Build it", "step_type": "run_tests", "started_at": T0}
    values.update(overrides)
    return StepUpdate(**values)


def run_started(rows: RunRows) -> RecordRunProgressInput:
    return progress(
        rows,
        run=RunUpdate(status="running", started_at=T0),
        steps=[step_started()],
        events=[EventRecord(key="run-started", event_type="run.started", payload={"n": 1}, at=T0),
                EventRecord(key="step-build-1-started", event_type="step.started",
                            payload={"step_id": "build"}, at=T0)],
    )


def test_record_run_progress_creates_step_executions_and_run_events(backend_sessions):
    rows = make_run_rows(backend_sessions)
    record(backend_sessions, run_started(rows))

    state = snapshot(backend_sessions, rows.run_id)
    started = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert state["run"] == ("running", None, {}, started, None)
    [(_, step_id, position, name, step_type, attempt, status, outputs, error, started_at, finished_at, reused)] = \
        state["steps"]
    assert (step_id, position, name, step_type, attempt, status) == ("build", 0, "Build it", "run_tests", 1,
                                                                     "running")
    assert (outputs, error, started_at, finished_at, reused) == ({}, None, started, None, None)
    assert [(e[1], e[2], e[3], e[4], e[5], e[6]) for e in state["events"]] == [
        (rows.account_id, rows.pipeline_id, "run.started", {"n": 1}, "run-started", started),
        (rows.account_id, rows.pipeline_id, "step.started", {"step_id": "build"}, "step-build-1-started", started),
    ]
    assert state["events"][0][0] < state["events"][1][0], "event ids increase in the order given"


def test_record_run_progress_twice_with_the_same_input_changes_nothing(backend_sessions):
    rows = make_run_rows(backend_sessions)
    inp = run_started(rows)
    record(backend_sessions, inp)
    before = snapshot(backend_sessions, rows.run_id)
    record(backend_sessions, inp)
    assert snapshot(backend_sessions, rows.run_id) == before
    with backend_sessions() as session:
        assert session.scalar(select(func.count()).select_from(StepExecution)
                              .where(StepExecution.run_id == rows.run_id)) == 1
        assert session.scalar(select(func.count()).select_from(RunEvent)
                              .where(RunEvent.run_id == rows.run_id)) == 2


def test_a_later_update_of_the_same_step_attempt_updates_it_in_place(backend_sessions):
    rows = make_run_rows(backend_sessions)
    record(backend_sessions, run_started(rows))
    [first] = snapshot(backend_sessions, rows.run_id)["steps"]

    record(backend_sessions, progress(rows, steps=[
        StepUpdate(step_id="build", position=0, attempt=1, status="failure", outputs={"k": "v"},
                   error="command exited with code 1", finished_at=T1),
        step_started(attempt=2, started_at=T1),
    ]))

    steps = snapshot(backend_sessions, rows.run_id)["steps"]
    assert len(steps) == 2
    updated, retried = steps
    assert updated[0] == first[0], "same row"
    assert updated[1:] == ("build", 0, "Build it", "run_tests", 1, "failure", {"k": "v"},
                           "command exited with code 1", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
                           datetime(2030, 1, 2, 3, 4, 9, 250000, tzinfo=UTC), None)
    assert retried[5:7] == (2, "running")


def test_events_are_deduplicated_by_key(backend_sessions):
    rows = make_run_rows(backend_sessions)
    record(backend_sessions, run_started(rows))
    record(backend_sessions, progress(rows, events=[
        EventRecord(key="run-started", event_type="run.started", payload={"changed": True}, at=T1),
        EventRecord(key="run-finished", event_type="run.finished", payload={"status": "success"}, at=T1),
        EventRecord(key="run-finished", event_type="run.finished", payload={"status": "dup"}, at=T1),
    ]))
    events = snapshot(backend_sessions, rows.run_id)["events"]
    assert [(e[3], e[4], e[5]) for e in events] == [
        ("run.started", {"n": 1}, "run-started"),
        ("step.started", {"step_id": "build"}, "step-build-1-started"),
        ("run.finished", {"status": "success"}, "run-finished"),
    ]
    assert [e[0] for e in events] == sorted(e[0] for e in events)


def test_the_same_event_key_in_two_runs_is_two_events(backend_sessions):
    first, second = make_run_rows(backend_sessions), make_run_rows(backend_sessions)
    record(backend_sessions, run_started(first))
    record(backend_sessions, run_started(second))
    assert len(snapshot(backend_sessions, second.run_id)["events"]) == 2


def test_run_update_sets_status_outputs_and_keeps_the_first_start_time(backend_sessions):
    rows = make_run_rows(backend_sessions)
    record(backend_sessions, run_started(rows))
    record(backend_sessions, progress(rows, run=RunUpdate(status="failure", error="step build failed",
                                                          outputs={"x": 1}, started_at=T1, finished_at=T1)))
    status, error, outputs, started_at, finished_at = snapshot(backend_sessions, rows.run_id)["run"]
    assert (status, error, outputs) == ("failure", "step build failed", {"x": 1})
    assert started_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert finished_at == datetime(2030, 1, 2, 3, 4, 9, 250000, tzinfo=UTC)


def test_progress_for_a_run_of_another_account_changes_nothing(backend_sessions):
    rows, other = make_run_rows(backend_sessions), make_run_rows(backend_sessions)
    before = snapshot(backend_sessions, rows.run_id)
    wrong = run_started(rows)
    wrong.account_id = other.account_id
    record(backend_sessions, wrong)
    assert snapshot(backend_sessions, rows.run_id) == before


def test_progress_for_a_deleted_run_is_a_no_op(backend_sessions):
    rows = make_run_rows(backend_sessions)
    with backend_sessions.begin() as session:
        session.delete(session.get(PipelineRun, rows.run_id))
    record(backend_sessions, run_started(rows))  # must not fail (and be retried forever)
    with backend_sessions() as session:
        assert session.scalar(select(func.count()).select_from(StepExecution)
                              .where(StepExecution.run_id == rows.run_id)) == 0
        assert session.scalar(select(func.count()).select_from(RunEvent)
                              .where(RunEvent.run_id == rows.run_id)) == 0
