"""Schedules: cron triggers of pipelines, each one a Temporal Schedule (the seed's SchedulesController).

Every answer carries what Temporal says about the schedule (``next_run_times``, paused or not,
overlap policy) next to the row, and the last run it started.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from temporalio.client import ScheduleDescription

from adapters.temporal import TemporalGateway
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.pages import Page
from api.run_views import run_public
from api.schemas import PipelineRunPublic
from db.models import PipelineRun, Schedule
from domain.statuses import RunStatus
from services import runs as services
from services import schedules as service

router = APIRouter(prefix="/schedules", tags=["schedules"])

NEXT_RUN_TIMES = 5
TRIGGER_POLL_SECONDS = 0.1
# Fields of a document schedule that belong to the pipeline document.
DOCUMENT_FIELDS = ("pipeline_id", "cron", "timezone", "inputs")

Cron = Annotated[str, Field(min_length=1, max_length=100, examples=["0 3 * * *"],
                            description="5 fields: minute hour day-of-month month day-of-week")]
TimeZone = Annotated[str, Field(min_length=1, max_length=64, description="IANA name, e.g. Europe/Paris")]
Description = Annotated[str, Field(max_length=5000)]


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"pipeline_id": 1, "cron": "0 3 * * 1-5", "timezone": "Europe/Paris", "inputs": {"greeting": "nightly"}}]})

    pipeline_id: int
    cron: Cron
    timezone: TimeZone = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict, description="values for the pipeline's declared inputs")
    is_active: bool = True
    description: Description = ""


class ScheduleUpdate(BaseModel):
    """Only the fields sent change; ``is_active`` alone pauses or unpauses."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"is_active": False}]})

    pipeline_id: int | None = None
    cron: Cron | None = None
    timezone: TimeZone | None = None
    inputs: dict[str, Any] | None = None
    is_active: bool | None = None
    description: Description | None = None


class ScheduleLastRun(BaseModel):
    id: int
    run_number: int
    status: RunStatus
    started_at: datetime | None
    finished_at: datetime | None


class SchedulePublic(BaseModel):
    id: int
    pipeline_id: int
    cron: str
    timezone: str
    inputs: dict[str, Any]
    is_active: bool
    description: str
    source: str = Field(description="`api`, or `document` when it is the pipeline's triggers.schedule (edit it there)")
    temporal_schedule_id: str
    temporal_state: Literal["scheduled", "paused", "missing", "unavailable"] = Field(
        description="what Temporal says: `missing` is repaired by the start-up reconcile")
    overlap_policy: str | None = Field(description="skip when the pipeline disallows concurrent runs, else allow_all")
    next_run_times: list[datetime] = Field(description="the next 5 fires, as Temporal computes them (UTC)")
    last_run: ScheduleLastRun | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime


SchedulesPublic = Page[SchedulePublic]


class ScheduleTriggerPublic(BaseModel):
    schedule: SchedulePublic
    trigger_workflow_id: str | None = Field(description="the ScheduledTriggerWorkflow Temporal started")
    run: PipelineRunPublic | None = Field(description="the run, when it was created within the wait")


def schedules_public(session: SessionDep, temporal: TemporalGateway, rows: list[Schedule]) -> list[SchedulePublic]:
    """Rows with Temporal's view of each (fetched together) and their last runs."""
    if not rows:
        return []
    try:
        descriptions: dict[int, Any] = service.call_temporal(temporal, service.describe_many, [r.id for r in rows],
                                                             what="schedules not described")
    except Exception:  # noqa: BLE001 - reads still answer, saying Temporal is unavailable
        descriptions = {r.id: RuntimeError("unavailable") for r in rows}
    run_ids = [r.last_run_id for r in rows if r.last_run_id]
    runs = {run.id: run for run in session.scalars(
        select(PipelineRun).where(PipelineRun.id.in_(run_ids), PipelineRun.account_id == rows[0].account_id))
    } if run_ids else {}
    return [_public(row, descriptions.get(row.id), runs.get(row.last_run_id or 0)) for row in rows]


def _public(row: Schedule, description: ScheduleDescription | Exception | None, last: PipelineRun | None) -> SchedulePublic:
    next_times: list[datetime] = []
    overlap = None
    if isinstance(description, ScheduleDescription):
        state = "paused" if description.schedule.state.paused else "scheduled"
        next_times = list(description.info.next_action_times[:NEXT_RUN_TIMES])
        overlap = description.schedule.policy.overlap.name.lower()
    else:
        state = "missing" if description is None else "unavailable"
    return SchedulePublic(
        id=row.id, pipeline_id=row.pipeline_id, cron=row.cron, timezone=row.timezone, inputs=row.inputs or {},
        is_active=row.is_active, description=row.description, source=row.source,
        temporal_schedule_id=service.temporal_schedule_id(row.id), temporal_state=state, overlap_policy=overlap,
        next_run_times=next_times,
        last_run=ScheduleLastRun(id=last.id, run_number=last.run_number, status=last.status,
                                 started_at=last.started_at, finished_at=last.finished_at) if last else None,
        last_run_at=row.last_run_at, created_at=row.created_at, updated_at=row.updated_at,
    )


@router.get("", response_model=SchedulesPublic)
def list_schedules(session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
                   pipeline_id: int | None = None, is_active: bool | None = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0)] = 0) -> SchedulesPublic:
    """The account's schedules, oldest first, each with Temporal's view of it."""
    query = select(Schedule).where(Schedule.account_id == caller.account_id)
    if pipeline_id is not None:
        query = query.where(Schedule.pipeline_id == pipeline_id)
    if is_active is not None:
        query = query.where(Schedule.is_active == is_active)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(session.scalars(query.order_by(Schedule.id).limit(limit).offset(offset)))
    return SchedulesPublic(data=schedules_public(session, temporal, rows), count=count)


@router.post("", response_model=SchedulePublic, status_code=status.HTTP_201_CREATED)
def create_schedule(body: ScheduleCreate, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                    settings: SettingsDep) -> SchedulePublic:
    """Create the row and its Temporal Schedule ``schedule-<id>``. Everything is checked first:
    422 naming ``cron``, ``timezone``, ``pipeline_id`` or ``inputs.<name>``; 503 (and nothing
    saved) when Temporal is unavailable."""
    pipeline = service.check_schedule(session, caller.account_id, pipeline_id=body.pipeline_id, cron=body.cron,
                                      timezone=body.timezone, inputs=body.inputs)
    row = Schedule(account_id=caller.account_id, pipeline_id=pipeline.id, cron=body.cron, timezone=body.timezone,
                   inputs=body.inputs, is_active=body.is_active, description=body.description, source="api")
    session.add(row)
    session.flush()
    try:
        service.call_temporal(temporal, service.create_temporal_schedule, row, pipeline.allow_concurrent, settings,
                              what="the schedule was not created", spec_loc=("cron",))
    except Exception:
        session.rollback()
        raise
    session.commit()
    return schedules_public(session, temporal, [row])[0]


@router.get("/{schedule_id}", response_model=SchedulePublic)
def show_schedule(schedule_id: int, session: SessionDep, caller: CurrentCaller, temporal: TemporalDep) -> SchedulePublic:
    """The schedule with its next fires and last run; 404 for another account's id."""
    return schedules_public(session, temporal, [service.get_schedule(session, caller.account_id, schedule_id)])[0]


@router.patch("/{schedule_id}", response_model=SchedulePublic)
def update_schedule(schedule_id: int, body: ScheduleUpdate, session: SessionDep, caller: WriterCaller,
                    temporal: TemporalDep, settings: SettingsDep) -> SchedulePublic:
    """Change some fields; the result is validated as a whole. ``is_active: false`` pauses the
    Temporal Schedule, ``true`` unpauses it. A schedule from a pipeline document takes only
    ``is_active`` and ``description`` here (409 otherwise: edit the document)."""
    row = service.get_schedule(session, caller.account_id, schedule_id)
    changes = body.model_dump(exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "type": "null", "msg": "may not be null"} for name in nulls])
    if row.source == service.DOCUMENT_SOURCE and set(changes) & set(DOCUMENT_FIELDS):
        raise errors.conflict(f"schedule {row.id} comes from pipeline {row.pipeline_id}'s document: change its "
                              "triggers.schedule there (only is_active and description can be changed here)")
    merged = {name: changes.get(name, getattr(row, name)) for name in DOCUMENT_FIELDS}
    spec_changed = any(merged[name] != getattr(row, name) for name in DOCUMENT_FIELDS)
    if spec_changed:
        pipeline = service.check_schedule(session, caller.account_id, **merged)
    else:  # pausing never fails on inputs the pipeline has since outgrown
        pipeline = services.get_pipeline(session, caller.account_id, row.pipeline_id)
    pause_changed = "is_active" in changes and changes["is_active"] != row.is_active
    for name, value in changes.items():
        setattr(row, name, value)
    session.flush()
    operation = None
    if spec_changed:
        operation = service.update_temporal_schedule
    elif pause_changed:
        operation = service.set_temporal_schedule_paused
    if operation is not None:
        try:
            service.call_temporal(temporal, operation, row, pipeline.allow_concurrent, settings,
                                  what="the schedule was not changed", spec_loc=("cron",))
        except Exception:
            session.rollback()
            raise
    session.commit()
    return schedules_public(session, temporal, [row])[0]


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(schedule_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Response:
    """Delete the Temporal Schedule, then the row (a fire already running finishes). A
    schedule from a pipeline document is removed by removing its triggers.schedule (409)."""
    row = service.get_schedule(session, caller.account_id, schedule_id)
    if row.source == service.DOCUMENT_SOURCE:
        raise errors.conflict(f"schedule {row.id} comes from pipeline {row.pipeline_id}'s document: remove "
                              "triggers.schedule there, or set is_active to false to pause it")
    service.call_temporal(temporal, service.delete_temporal_schedule, row.id, what="the schedule was not deleted")
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{schedule_id}/trigger", response_model=ScheduleTriggerPublic, status_code=status.HTTP_202_ACCEPTED)
def trigger_schedule(schedule_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                     settings: SettingsDep) -> ScheduleTriggerPublic:
    """Fire the schedule now through its Temporal Schedule (the same path as a timed fire, even
    when paused). 202 with the run once it exists (waits up to a few seconds), else ``run: null``
    and the trigger workflow id to follow."""
    row = service.get_schedule(session, caller.account_id, schedule_id)
    pipeline = services.get_pipeline(session, caller.account_id, row.pipeline_id)
    if not pipeline.is_active:
        raise errors.conflict(f"pipeline {pipeline.id} is inactive; set its is_active to true to run it")
    problems = service.input_problems(pipeline, row.inputs or {}, ("inputs",))
    if problems:
        listed = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
        raise errors.conflict(f"schedule {row.id}'s inputs no longer match pipeline {pipeline.id}'s declared "
                              f"inputs ({listed}); update the schedule's inputs")
    known = service.call_temporal(temporal, service.trigger_temporal_schedule, row, pipeline.allow_concurrent,
                                  settings, what="the schedule was not triggered")
    workflow_id, run = _wait_for_fire(session, temporal, settings, row, known)
    session.expire_all()
    fresh = service.get_schedule(session, caller.account_id, schedule_id)
    return ScheduleTriggerPublic(schedule=schedules_public(session, temporal, [fresh])[0],
                                 trigger_workflow_id=workflow_id,
                                 run=run_public(run, temporal) if run is not None else None)


def _wait_for_fire(session: SessionDep, temporal: TemporalGateway, settings: SettingsDep, row: Schedule,
                   known: set[str]) -> tuple[str | None, PipelineRun | None]:
    """The new fire's workflow id (the one Temporal did not list before) and its run."""
    deadline = time.monotonic() + settings.schedule_trigger_wait_seconds
    workflow_id: str | None = None
    while time.monotonic() < deadline:
        if workflow_id is None:
            description = service.call_temporal(temporal, service.describe_temporal_schedule, row.id,
                                                what="the trigger was sent but could not be followed")
            new = sorted(service.trigger_workflow_ids(description) - known)
            workflow_id = new[-1] if new else None
        if workflow_id is not None:
            session.expire_all()
            for run in session.scalars(
                select(PipelineRun).where(PipelineRun.pipeline_id == row.pipeline_id,
                                          PipelineRun.trigger_type == "schedule")
                .order_by(PipelineRun.id.desc()).limit(20)
            ):
                if (run.trigger_context or {}).get("trigger_workflow_id") == workflow_id:
                    return workflow_id, run
        time.sleep(TRIGGER_POLL_SECONDS)
    return workflow_id, None
