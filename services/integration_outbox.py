"""The start outbox of integration executions started through the API: the request commits the
execution (``pending``) and then starts its workflow; an API process killed between the two
leaves a ``pending`` row without a workflow. Every ``run_outbox_interval_seconds`` the API starts
the workflow of each such row older than ``run_outbox_grace_seconds`` — with
``REJECT_DUPLICATE``, so a row whose workflow exists (running, or already closed) is never run
twice — and marks it failed with the reason when Temporal refuses it for good. Executions of a
pipeline step are started by their run's workflow and are not the outbox's."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from db.integration_models import IntegrationExecution
from services.integration_workflows import mark_start_failed, start_execution_workflow
from settings import Settings

log = logging.getLogger(__name__)
BATCH = 200
HOPELESS_RPC = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.PERMISSION_DENIED}


def _candidates(sessions: sessionmaker[Session], settings: Settings) -> list[tuple[int, int]]:
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.run_outbox_grace_seconds)
    with sessions() as session:
        return [(row.id, row.account_id) for row in session.execute(
            select(IntegrationExecution.id, IntegrationExecution.account_id).where(
                IntegrationExecution.status == "pending", IntegrationExecution.trigger_type == "api",
                IntegrationExecution.started_at.is_(None), IntegrationExecution.created_at <= cutoff)
            .order_by(IntegrationExecution.id).limit(BATCH))]


def _fail(sessions: sessionmaker[Session], execution_id: int, reason: str) -> None:
    with sessions() as session:
        mark_start_failed(session, execution_id, reason)


async def reconcile_once(temporal: TemporalGateway, sessions: sessionmaker[Session],
                         settings: Settings) -> list[int]:
    """One pass; the ids whose workflow it started."""
    started = []
    for execution_id, account_id in await asyncio.to_thread(_candidates, sessions, settings):
        try:
            await start_execution_workflow(temporal, settings, execution_id, account_id,
                                           id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            continue  # its workflow exists: it owns the row
        except RPCError as exc:
            if exc.status in HOPELESS_RPC:
                await asyncio.to_thread(_fail, sessions, execution_id, "the execution could not be started: "
                                        f"Temporal refused it ({exc.status.name})")
            continue
        started.append(execution_id)
    if started:
        log.warning("integration start outbox: started executions %s", started)
    return started


async def run_forever(temporal: TemporalGateway, sessions: sessionmaker[Session], settings: Settings) -> None:
    """Every ``run_outbox_interval_seconds``; never stops the API."""
    while True:
        try:
            await reconcile_once(temporal, sessions, settings)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - database or Temporal down: the next round tries again
            log.warning("integration start outbox not reconciled: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(settings.run_outbox_interval_seconds)
