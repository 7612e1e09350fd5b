"""Starting and cancelling an integration execution's ``IntegrationExecutionWorkflow`` through the
Temporal gateway. A start Temporal refuses marks the execution ``failure`` with the reason (and
answers 503): an execution is never left ``pending`` by a refused start."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from adapters.temporal import TemporalGateway, is_not_found
from db.integration_models import IntegrationExecution
from domain import errors
from domain.integrations import FINISHED_EXECUTION, execution_workflow_id
from services import audit
from services.integration_executions import owned_execution
from settings import Settings
from workflows.integration_execution import IntegrationExecutionInput, IntegrationExecutionWorkflow


async def start_execution_workflow(temporal: TemporalGateway, settings: Settings, execution_id: int,
                                   account_id: int, **options: Any) -> None:
    """Start ``integration-execution-<id>`` (``options``: more ``Client.start_workflow`` options)."""
    await temporal.start(IntegrationExecutionWorkflow.run,
                         IntegrationExecutionInput(execution_id=execution_id, account_id=account_id,
                                                   timeout_minutes=settings.integration_timeout_minutes),
                         id=execution_workflow_id(execution_id), static_summary=f"integration execution {execution_id}",
                         **options)


def mark_start_failed(session: Session, execution_id: int, reason: str) -> None:
    session.execute(update(IntegrationExecution).where(IntegrationExecution.id == execution_id,
                                                       IntegrationExecution.status == "pending")
                    .values(status="failure", error=reason, finished_at=datetime.now(UTC)))
    session.commit()


def start_workflow(session: Session, temporal: TemporalGateway, settings: Settings, row: IntegrationExecution) -> None:
    """Start the execution's workflow; refused or unreachable: the execution fails with the reason (503)."""
    try:
        temporal.call(start_execution_workflow, temporal, settings, row.id, row.account_id)
    except WorkflowAlreadyStartedError:
        return  # the outbox (services.integration_outbox) started it meanwhile
    except Exception as exc:  # noqa: BLE001 - any refusal: say so and keep the row honest
        mark_start_failed(session, row.id, "the execution could not be started: Temporal did not accept it "
                                           f"({type(exc).__name__})")
        raise errors.Unavailable(f"integration execution {row.id} was recorded but could not be started: "
                                 "Temporal is unavailable") from exc


async def _cancel_workflow(temporal: TemporalGateway, workflow_id: str) -> bool:
    try:
        if (await temporal.describe(workflow_id)).status != WorkflowExecutionStatus.RUNNING:
            return False
    except RPCError as exc:
        if not is_not_found(exc):
            raise
        return False
    return await temporal.cancel(workflow_id)


def cancel_execution(session: Session, temporal: TemporalGateway, account_id: int, actor: audit.Actor,
                     execution_id: int) -> IntegrationExecution:
    row = owned_execution(session, account_id, execution_id)
    if row.status in FINISHED_EXECUTION:
        raise errors.conflict(f"integration execution {row.id} already ended with status {row.status}")
    try:
        accepted = temporal.call(_cancel_workflow, temporal, row.workflow_id or execution_workflow_id(row.id))
    except Exception as exc:
        raise errors.Unavailable(f"integration execution {row.id} was not cancelled: Temporal is unavailable") from exc
    if not accepted:  # no workflow (never started) or it has just ended: settle the row here
        session.execute(update(IntegrationExecution).where(IntegrationExecution.id == row.id,
                                                           IntegrationExecution.status.in_(["pending", "running"]))
                        .values(status="cancelled", error="cancelled", finished_at=datetime.now(UTC)))
    audit.record(session, account_id, actor, "integration_execution.cancelled", target_type="integration_execution",
                 target_id=row.id, details={"instance_id": row.instance_id})
    session.commit()
    session.refresh(row)
    return row
