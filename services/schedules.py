"""Schedules (the seed's ``Schedule``): each ``schedules`` row is the Temporal Schedule ``schedule-<id>``.

The row is what users edit; Temporal does the firing. Every change goes row first (flushed, not
committed), then Temporal, then commit, so a Temporal refusal leaves the row as it was. What can
still drift — a crash between Temporal and the commit, a schedule deleted or paused in the
Temporal UI — is repaired by :func:`reconcile_schedules`, which the API runs when it starts.

The Schedule's action starts :class:`~workflows.scheduled_trigger.ScheduledTriggerWorkflow` on the
main task queue. Its overlap policy follows the pipeline's ``allow_concurrent``: ``ALLOW_ALL``
when true; ``SKIP`` when false, so a fire that comes while the previous scheduled run is still
going is dropped rather than queued (a cron that outpaces its pipeline would otherwise build an
ever-growing backlog; BUFFER_ONE would still start a second run right after a long one).

Errors: the ``*_temporal_schedule`` coroutines raise Temporal's own errors (``RPCError``...);
:func:`call_temporal` runs one from a sync route and turns them into HTTP answers: 422 naming the
field when Temporal refuses the spec, 503 when Temporal cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from anyio import from_thread
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.client import Schedule as TemporalSchedule
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from db.models import Pipeline, Schedule
from domain import errors
from domain.pipeline_document import ScheduleTrigger, resolve_run_inputs
from settings import Settings
from workflows.scheduled_trigger import ScheduledTriggerInput, ScheduledTriggerWorkflow

log = logging.getLogger("services.schedules")

TEMPORAL_ID_PREFIX = "schedule-"
_OUR_TEMPORAL_ID = re.compile(r"^schedule-(\d+)$")
# A safety net: under SKIP a trigger that never ended would block every later fire.
TRIGGER_EXECUTION_TIMEOUT = timedelta(days=1)
DOCUMENT_SOURCE = "document"
DESCRIBE_CONCURRENCY = 16


def temporal_schedule_id(schedule_id: int) -> str:
    """The Temporal Schedule id of a ``schedules`` row."""
    return f"{TEMPORAL_ID_PREFIX}{schedule_id}"


def overlap_policy(allow_concurrent: bool) -> ScheduleOverlapPolicy:
    """ALLOW_ALL when the pipeline allows concurrent runs, SKIP when it does not."""
    return ScheduleOverlapPolicy.ALLOW_ALL if allow_concurrent else ScheduleOverlapPolicy.SKIP


def _note(row: Schedule) -> str:
    if row.is_active:
        return f"managed by the DevOps API (schedules row {row.id})"
    return f"paused by the DevOps API: schedule {row.id} has is_active false"


def desired_schedule(row: Schedule, allow_concurrent: bool, settings: Settings) -> TemporalSchedule:
    """The Temporal Schedule a row stands for. The action's memo keeps the cron as written,
    because Temporal turns cron strings into calendars and does not give them back."""
    return TemporalSchedule(
        action=ScheduleActionStartWorkflow(
            ScheduledTriggerWorkflow.run,
            ScheduledTriggerInput(schedule_id=row.id, account_id=row.account_id),
            # Temporal appends each fire's time, so every trigger gets its own workflow id.
            id=f"{temporal_schedule_id(row.id)}-trigger",
            task_queue=settings.task_queue,
            execution_timeout=TRIGGER_EXECUTION_TIMEOUT,
            memo={"schedule_id": row.id, "pipeline_id": row.pipeline_id, "cron": row.cron, "timezone": row.timezone},
            static_summary=f"schedule {row.id} of pipeline {row.pipeline_id}: {row.cron} ({row.timezone})",
        ),
        spec=ScheduleSpec(cron_expressions=[row.cron], time_zone_name=row.timezone),
        policy=SchedulePolicy(overlap=overlap_policy(allow_concurrent),
                              catchup_window=timedelta(seconds=settings.schedule_catchup_window_seconds)),
        state=ScheduleState(paused=not row.is_active, note=_note(row)),
    )


# ---- Temporal operations (raise Temporal's errors) ---------------------------------------


async def create_temporal_schedule(client: Client, row: Schedule, allow_concurrent: bool,
                                   settings: Settings) -> None:
    """Create ``schedule-<id>``; one that already exists (a retry, a reused id) is made to match."""
    try:
        await client.create_schedule(temporal_schedule_id(row.id), desired_schedule(row, allow_concurrent, settings))
    except ScheduleAlreadyRunningError:
        await update_temporal_schedule(client, row, allow_concurrent, settings)


async def update_temporal_schedule(client: Client, row: Schedule, allow_concurrent: bool,
                                   settings: Settings) -> None:
    """Replace spec, action, policy and paused state; a schedule missing in Temporal is recreated."""
    desired = desired_schedule(row, allow_concurrent, settings)
    try:
        await client.get_schedule_handle(temporal_schedule_id(row.id)).update(lambda _: ScheduleUpdate(schedule=desired))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        await client.create_schedule(temporal_schedule_id(row.id), desired)


async def set_temporal_schedule_paused(client: Client, row: Schedule, allow_concurrent: bool,
                                       settings: Settings) -> None:
    """Pause or unpause as ``is_active`` says, leaving the rest of the schedule as it is."""
    handle = client.get_schedule_handle(temporal_schedule_id(row.id))
    try:
        if row.is_active:
            await handle.unpause(note=_note(row))
        else:
            await handle.pause(note=_note(row))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        await client.create_schedule(temporal_schedule_id(row.id), desired_schedule(row, allow_concurrent, settings))


async def delete_temporal_schedule(client: Client, schedule_id: int) -> bool:
    """Delete ``schedule-<id>``; False when it did not exist. Fires already running finish."""
    try:
        await client.get_schedule_handle(temporal_schedule_id(schedule_id)).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def describe_temporal_schedule(client: Client, schedule_id: int) -> ScheduleDescription | None:
    """Temporal's view of ``schedule-<id>``, or None when it does not exist."""
    try:
        return await client.get_schedule_handle(temporal_schedule_id(schedule_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def describe_many(client: Client, schedule_ids: Sequence[int]) -> dict[int, ScheduleDescription | None | Exception]:
    """Descriptions of several schedules at once; a failure is returned in place of its description."""
    limit = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

    async def one(schedule_id: int) -> ScheduleDescription | None:
        async with limit:
            return await describe_temporal_schedule(client, schedule_id)

    found = await asyncio.gather(*(one(i) for i in schedule_ids), return_exceptions=True)
    return dict(zip(schedule_ids, found, strict=True))


def trigger_workflow_ids(description: ScheduleDescription | None) -> set[str]:
    """Workflow ids of the fires Temporal remembers (recent and running)."""
    if description is None:
        return set()
    ids = {getattr(a.action, "workflow_id", "") for a in description.info.recent_actions}
    ids |= {getattr(a, "workflow_id", "") for a in description.info.running_actions}
    return ids - {""}


async def trigger_temporal_schedule(client: Client, row: Schedule, allow_concurrent: bool,
                                    settings: Settings) -> set[str]:
    """Fire the schedule now, through Temporal (the same path as a scheduled fire); returns the
    fires known before, so the caller can tell the new one. ALLOW_ALL: "run now" always runs
    (a pipeline that must not overlap still queues the run behind the one going)."""
    before = await describe_temporal_schedule(client, row.id)
    if before is None:  # deleted behind our back: put it back first
        await create_temporal_schedule(client, row, allow_concurrent, settings)
    await client.get_schedule_handle(temporal_schedule_id(row.id)).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    return trigger_workflow_ids(before)


# ---- from sync routes --------------------------------------------------------------------


def call_temporal(temporal: TemporalGateway, operation: Callable[..., Awaitable[Any]], *args: Any,
                  what: str, spec_loc: Sequence[Any] | None = None) -> Any:
    """Run ``operation(client, *args)`` from a sync route. Temporal refusing the spec answers
    422 naming ``spec_loc``; Temporal unreachable answers 503 saying that ``what`` did not happen."""

    async def run() -> Any:
        return await operation(await temporal.client(), *args)

    try:
        return from_thread.run(run)
    except errors.DomainError:
        raise
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT and spec_loc is not None:
            raise errors.unprocessable([{"loc": ["body", *spec_loc], "type": "schedule_spec",
                                         "msg": f"Temporal refused the schedule: {exc.message}"}]) from None
        raise _unavailable(what, exc) from exc
    except Exception as exc:  # connection refused, timeouts: Temporal is not there
        raise _unavailable(what, exc) from exc


def _unavailable(what: str, exc: Exception) -> errors.Unavailable:
    return errors.Unavailable(f"Temporal is unavailable ({type(exc).__name__}): {what}; try again when it is back")


# ---- validation and rows -----------------------------------------------------------------


def get_schedule(session: Session, account_id: int, schedule_id: int) -> Schedule:
    """The account's schedule, or 404 (also for another account's id)."""
    row = session.scalar(select(Schedule).where(Schedule.id == schedule_id, Schedule.account_id == account_id))
    if row is None:
        raise errors.not_found("schedule")
    return row


def check_schedule(session: Session, account_id: int, *, pipeline_id: int, cron: str, timezone: str,
                   inputs: dict[str, Any], loc: Sequence[Any] = ("body",)) -> Pipeline:
    """Validate a schedule's fields together and return its pipeline; 422 naming every bad field
    (``cron``, ``timezone``, ``pipeline_id``, ``inputs.<name>``) under ``loc``."""
    problems: list[dict[str, Any]] = []
    try:
        ScheduleTrigger.model_validate({"cron": cron, "timezone": timezone})
    except ValidationError as exc:
        problems += [{"loc": [*loc, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in exc.errors()]
    pipeline = session.scalar(select(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.account_id == account_id))
    if pipeline is None:
        problems.append({"loc": [*loc, "pipeline_id"], "type": "not_found",
                         "msg": f"pipeline {pipeline_id} not found in this account"})
    else:
        problems += input_problems(pipeline, inputs, loc)
    if problems:
        raise errors.unprocessable(problems)
    assert pipeline is not None
    return pipeline


def input_problems(pipeline: Pipeline, inputs: dict[str, Any], loc: Sequence[Any]) -> list[dict[str, Any]]:
    """The schedule's inputs checked against the pipeline's declared inputs (``inputs.<name>``)."""
    _, problems = resolve_run_inputs(pipeline.inputs or {}, inputs)
    return [{**p, "loc": [*loc, *p["loc"][1:]]} for p in problems]


# ---- pipeline documents ------------------------------------------------------------------


@dataclass
class _Plan:
    create: list[Schedule] = field(default_factory=list)
    update: list[Schedule] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)


def sync_pipeline_schedules(session: Session, temporal: TemporalGateway, settings: Settings,
                            pipeline: Pipeline) -> None:
    """Make a just-saved pipeline's schedules follow it (call after ``apply_document``, before
    commit): ``triggers.schedule`` becomes its one ``source="document"`` schedule (created,
    updated, or removed when the document no longer has it), and every schedule of the
    pipeline takes its ``allow_concurrent`` as overlap policy. 422 naming
    ``triggers.schedule.*`` or 503; the transaction is then not to be committed."""
    trigger = (pipeline.triggers or {}).get("schedule")
    rows = list(session.scalars(select(Schedule).where(Schedule.pipeline_id == pipeline.id).order_by(Schedule.id)))
    document_row = next((r for r in rows if r.source == DOCUMENT_SOURCE), None)
    plan = _Plan()
    if trigger:
        loc = ("triggers", "schedule")
        problems = input_problems(pipeline, trigger.get("inputs") or {}, ("body", *loc))
        if problems:
            raise errors.unprocessable(problems)
        if document_row is None:
            document_row = Schedule(account_id=pipeline.account_id, pipeline_id=pipeline.id, source=DOCUMENT_SOURCE,
                                    description="from the pipeline document (triggers.schedule)")
            session.add(document_row)
            plan.create.append(document_row)
        document_row.cron = trigger["cron"]
        document_row.timezone = trigger.get("timezone") or "UTC"
        document_row.inputs = dict(trigger.get("inputs") or {})
        session.flush()
    elif document_row is not None:
        plan.delete.append(document_row.id)
        session.delete(document_row)
        session.flush()
    plan.update = [r for r in rows if r not in plan.create and r.id not in plan.delete]
    if plan.create or plan.update or plan.delete:
        call_temporal(temporal, _apply_plan, plan, pipeline.allow_concurrent, settings,
                      what="the pipeline and its schedule were not saved", spec_loc=("triggers", "schedule", "cron"))


async def _apply_plan(client: Client, plan: _Plan, allow_concurrent: bool, settings: Settings) -> None:
    created: list[int] = []
    try:
        for row in plan.create:
            await create_temporal_schedule(client, row, allow_concurrent, settings)
            created.append(row.id)
        for row in plan.update:
            await update_temporal_schedule(client, row, allow_concurrent, settings)
        for schedule_id in plan.delete:
            await delete_temporal_schedule(client, schedule_id)
    except BaseException:
        # The rows will not be committed: take back the Temporal Schedules made for them.
        for schedule_id in created:
            try:
                await delete_temporal_schedule(client, schedule_id)
            except Exception:  # noqa: BLE001 - reconcile removes what is left
                log.warning("could not remove %s after a failed save; reconcile will", temporal_schedule_id(schedule_id))
        raise


def delete_pipeline_schedules(session: Session, temporal: TemporalGateway, pipeline: Pipeline) -> None:
    """Before a pipeline is deleted: delete its Temporal Schedules (its rows go with the
    pipeline, ``ON DELETE CASCADE``). 503, and nothing deleted, when Temporal is unavailable."""
    ids = list(session.scalars(select(Schedule.id).where(Schedule.pipeline_id == pipeline.id)))
    if ids:
        call_temporal(temporal, _delete_all, ids, what="the pipeline and its schedules were not deleted")


async def _delete_all(client: Client, schedule_ids: list[int]) -> None:
    for schedule_id in schedule_ids:
        await delete_temporal_schedule(client, schedule_id)


# ---- reconcile ---------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    """What :func:`reconcile_schedules` did, by schedule id."""

    recreated: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    in_sync: int = 0

    def summary(self) -> str:
        """One line for the log: ``schedules reconciled: 1 recreated, 0 updated, 2 orphans removed``."""
        return (f"schedules reconciled: {len(self.recreated)} recreated, {len(self.updated)} updated, "
                f"{len(self.orphans_removed)} orphans removed")


async def reconcile_schedules(client: Client, sessions: sessionmaker[Session], settings: Settings) -> ReconcileReport:
    """Make Temporal hold exactly one matching Schedule per row: recreate missing ones, update
    drifted ones (cron, time zone, paused, overlap policy, action), and delete orphans
    (``schedule-<n>`` with no row). Logs one line per action and the summary."""
    report = ReconcileReport()
    rows = await asyncio.to_thread(_load_rows, sessions)
    descriptions = await describe_many(client, [row.id for row, _ in rows])
    for row, allow_concurrent in rows:
        description = descriptions[row.id]
        if isinstance(description, Exception):
            raise description
        if description is None:
            await create_temporal_schedule(client, row, allow_concurrent, settings)
            report.recreated.append(row.id)
            log.info("schedule %s: %s was missing in Temporal; recreated", row.id, temporal_schedule_id(row.id))
            continue
        drift = schedule_drift(description, row, allow_concurrent, settings, client)
        if drift:
            await update_temporal_schedule(client, row, allow_concurrent, settings)
            report.updated.append(row.id)
            log.info("schedule %s: %s differed in Temporal (%s); updated", row.id,
                     temporal_schedule_id(row.id), ", ".join(drift))
        else:
            report.in_sync += 1
    wanted = {temporal_schedule_id(row.id) for row, _ in rows}
    candidates: dict[str, int] = {}
    async for listed in await client.list_schedules():
        match = _OUR_TEMPORAL_ID.match(listed.id)
        if match and listed.id not in wanted:
            candidates[listed.id] = int(match.group(1))
    # A row created since the rows were read is not an orphan: look again before deleting.
    still_missing = await asyncio.to_thread(_ids_without_rows, sessions, list(candidates.values()))
    for temporal_id, schedule_id in sorted(candidates.items()):
        if schedule_id not in still_missing:
            continue
        if await delete_temporal_schedule(client, schedule_id):
            report.orphans_removed.append(temporal_id)
            log.info("%s has no schedules row; deleted from Temporal", temporal_id)
    log.info(report.summary())
    return report


def schedule_drift(description: ScheduleDescription, row: Schedule, allow_concurrent: bool, settings: Settings,
                   client: Client) -> list[str]:
    """How Temporal's schedule differs from the row (empty when it matches)."""
    found = description.schedule
    drift: list[str] = []
    if found.state.paused != (not row.is_active):
        drift.append("paused" if found.state.paused else "not paused")
    if found.policy.overlap != overlap_policy(allow_concurrent):
        drift.append(f"overlap {found.policy.overlap.name}")
    spec = found.spec
    if (spec.time_zone_name or "UTC") != row.timezone:
        drift.append(f"time zone {spec.time_zone_name or 'UTC'}")
    if spec.intervals or not spec.calendars or spec.skip:
        drift.append("spec edited outside the API")
    action = found.action
    if not isinstance(action, ScheduleActionStartWorkflow) or action.workflow != "ScheduledTriggerWorkflow" \
            or action.task_queue != settings.task_queue:
        drift.append("action")
    elif _memo_value(client, action.memo, "cron") != row.cron:
        drift.append("cron")
    return drift


def _memo_value(client: Client, memo: Any, key: str) -> Any:
    value = (memo or {}).get(key)
    if value is None or not hasattr(value, "data"):
        return value
    return client.data_converter.payload_converter.from_payload(value)


def _load_rows(sessions: sessionmaker[Session]) -> list[tuple[Schedule, bool]]:
    with sessions() as session:
        return [(row, bool(allow)) for row, allow in session.execute(
            select(Schedule, Pipeline.allow_concurrent).join(Pipeline, Pipeline.id == Schedule.pipeline_id)
            .order_by(Schedule.id))]


def _ids_without_rows(sessions: sessionmaker[Session], schedule_ids: list[int]) -> set[int]:
    if not schedule_ids:
        return set()
    with sessions() as session:
        existing = set(session.scalars(select(Schedule.id).where(Schedule.id.in_(schedule_ids))))
    return set(schedule_ids) - existing


async def reconcile_on_start(temporal: TemporalGateway, sessions: sessionmaker[Session], settings: Settings) -> None:
    """The API's start-up reconcile: never fails the start, says what it did or why it could not."""
    try:
        await reconcile_schedules(await temporal.client(), sessions, settings)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the API serves anyway; the next start tries again
        log.warning("schedules not reconciled at start-up: %s: %s", type(exc).__name__, exc)
