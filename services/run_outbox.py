"""The start outbox of pipeline runs: no run is left ``pending``/``queued`` without a workflow.

Every way in writes the run row first (committed, ``workflow_started_at`` NULL) and then starts
its workflow ``run-<id>`` (or enqueues it on its pipeline's queue) and sets ``workflow_started_at``.
A process that dies between the two (``kill -9`` of the API mid-request) leaves the row in the
outbox. The API drains it at start-up and then every ``run_outbox_interval_seconds``: a row older
than ``run_outbox_grace_seconds`` (the request that wrote it is given time to finish) gets its
workflow with the same input the request would have given it, or is marked ``failure`` with the
reason when it can never start.

Safe with several API replicas and with a live request racing it: the workflow id is the run's, so
starting twice starts once (the queue keeps one entry per run id), and every row change is
conditional on ``workflow_started_at IS NULL``. A run cancelled while still in the outbox
(:func:`services.runs.cancel_unstarted_run`) is not picked; if it was cancelled while the
reconciler was starting it, the reconciler cancels the workflow it just started.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from db.models import PipelineRun
from domain.errors import DomainError
from services import idempotency_keys as idempotency
from services import runs as services
from settings import Settings
from workflows.pipeline_run import PipelineRunInput

log = logging.getLogger(__name__)

BATCH = 200
# Temporal refusals that no later attempt can change (a malformed request), unlike UNAVAILABLE,
# DEADLINE_EXCEEDED or a connection error, which a later round retries.
HOPELESS_RPC = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.PERMISSION_DENIED}


@dataclass
class OutboxResult:
    started: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # Temporal unavailable: the next round retries
    cancelled: list[int] = field(default_factory=list)  # cancelled while being started: workflow cancelled too
    next_due: datetime | None = None  # when the youngest skipped row leaves its grace period


@dataclass
class _Prepared:
    run: PipelineRun
    inp: PipelineRunInput | None = None
    refusal: str | None = None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive UTC


def _candidates(sessions: sessionmaker[Session], settings: Settings) -> tuple[list[int], datetime | None]:
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.run_outbox_grace_seconds)
    unstarted = (PipelineRun.workflow_started_at.is_(None), PipelineRun.status.in_(services.UNSTARTED_STATUSES))
    with sessions() as session:
        ids = list(session.scalars(select(PipelineRun.id).where(*unstarted, PipelineRun.created_at <= cutoff)
                                   .order_by(PipelineRun.id).limit(BATCH)))
        youngest = session.scalar(select(func.min(PipelineRun.created_at))
                                  .where(*unstarted, PipelineRun.created_at > cutoff))
    due = _utc(youngest) + timedelta(seconds=settings.run_outbox_grace_seconds) if youngest else None
    return ids, due


def _prepare(sessions: sessionmaker[Session], settings: Settings, run_id: int) -> _Prepared | None:
    """The input the creating request would have started the workflow with (a retry's reused
    steps rebuilt from the run it retries), or why there can be none. None: no longer unstarted."""
    with sessions() as session:
        run = session.get(PipelineRun, run_id)
        if run is None or run.workflow_started_at is not None or run.status not in services.UNSTARTED_STATUSES:
            return None
        reused = None
        if run.from_step:
            original = session.get(PipelineRun, run.retry_of_run_id) if run.retry_of_run_id else None
            if original is None:
                return _Prepared(run, refusal="the run could not be started: the run whose steps before "
                                              f"'{run.from_step}' it reuses no longer exists; retry without from_step")
            try:
                reused = services.reused_steps_for(session, original, run.from_step)
            except DomainError as exc:
                problems = exc.detail
                detail = problems[0]["msg"] if isinstance(problems, list | tuple) and problems else problems
                return _Prepared(run, refusal=f"the run could not be started: {detail}")
        return _Prepared(run, services.workflow_input(run, settings, reused))


def _fail(sessions: sessionmaker[Session], run: PipelineRun, reason: str) -> bool:
    with sessions() as session:
        row = session.get(PipelineRun, run.id)
        if row is None:
            return False
        done = services.mark_start_failed(session, row, reason)
        session.commit()
        return done


async def reconcile_once(temporal: TemporalGateway, sessions: sessionmaker[Session], settings: Settings) -> OutboxResult:
    """One pass over the outbox. Raises only when the database is unreachable."""
    result = OutboxResult()
    ids, result.next_due = await asyncio.to_thread(_candidates, sessions, settings)
    for run_id in ids:
        try:
            prepared = await asyncio.to_thread(_prepare, sessions, settings, run_id)
        except (OperationalError, InterfaceError):
            raise  # the database is gone: end this round
        except Exception:  # one damaged row must not hold up the others
            log.exception("run %s: its workflow input could not be built; left for the next round", run_id)
            result.deferred.append(run_id)
            continue
        if prepared is None:
            continue
        run = prepared.run
        if prepared.refusal is not None:
            if await asyncio.to_thread(_fail, sessions, run, prepared.refusal):
                result.failed.append(run_id)
            continue
        assert prepared.inp is not None
        try:
            await services.start_run_workflow(temporal, settings, run, prepared.inp)
        except RPCError as exc:
            if exc.status in HOPELESS_RPC:
                reason = f"the run could not be started: Temporal refused it ({exc.status.name}: {exc.message})"
                if await asyncio.to_thread(_fail, sessions, run, reason):
                    result.failed.append(run_id)
                continue
            result.deferred.append(run_id)
            continue
        except Exception as exc:  # noqa: BLE001 - Temporal unreachable: the next round tries again
            log.info("run %s not started from the outbox yet: %s: %s", run_id, type(exc).__name__, exc)
            result.deferred.append(run_id)
            continue
        cancelled = await asyncio.to_thread(services.record_workflow_started, sessions, [run_id])
        result.started.append(run_id)
        if cancelled:  # cancelled (services.cancel_unstarted_run) while we were starting it
            await services.cancel_started_meanwhile(temporal, [run], cancelled)
            result.cancelled.append(run_id)
    if result.started or result.failed or result.deferred:
        log.warning("run start outbox: started %s, failed %s, deferred (Temporal unavailable) %s",
                    result.started, result.failed, result.deferred)
    return result


def _purge_idempotency_keys(sessions: sessionmaker[Session]) -> None:
    """The same periodic round bounds the Idempotency-Key table (expired keys are ignored anyway)."""
    with sessions() as session:
        idempotency.purge_expired(session)


async def run_forever(temporal: TemporalGateway, sessions: sessionmaker[Session], settings: Settings) -> None:
    """At API start and then every ``run_outbox_interval_seconds`` (sooner when a young row
    leaves its grace period before that); never stops the API."""
    while True:
        delay = settings.run_outbox_interval_seconds
        try:
            result = await reconcile_once(temporal, sessions, settings)
            await asyncio.to_thread(_purge_idempotency_keys, sessions)
            if result.next_due is not None:
                until_due = (result.next_due - datetime.now(UTC)).total_seconds() + 0.5
                delay = min(delay, max(until_due, 0.5))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - database down: the next round tries again
            log.warning("run start outbox not reconciled: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(delay)


__all__ = ["OutboxResult", "reconcile_once", "run_forever"]
