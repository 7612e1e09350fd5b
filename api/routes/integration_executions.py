"""``/integration_executions``: every execution of the account's integration instances, from the
API or from a pipeline's ``integration`` step (``run_id``/``step_id`` set)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import ActorDep, CurrentCaller, SessionDep, TemporalDep, WriterCaller
from api.integration_schemas import IntegrationExecutionPublic
from api.pages import Page
from api.routes.integration_instances import MAX_WAIT_SECONDS, execution_public, wait_for_execution
from domain.integrations import ExecutionStatus
from services import integration_executions as services
from services import integration_workflows

router = APIRouter(prefix="/integration_executions", tags=["integrations"])


@router.get("", response_model=Page[IntegrationExecutionPublic], summary="List integration executions")
def list_integration_executions(session: SessionDep, caller: CurrentCaller, instance_id: int | None = None,
                                status_: Annotated[ExecutionStatus | None, Query(alias="status")] = None,
                                run_id: int | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                                offset: Annotated[int, Query(ge=0)] = 0) -> Page[IntegrationExecutionPublic]:
    """Newest first; filter by instance, status or pipeline run."""
    rows, count = services.list_executions(session, caller.account_id, instance_id=instance_id, status=status_,
                                           run_id=run_id, limit=limit, offset=offset)
    return Page(data=[execution_public(r) for r in rows], count=count)


@router.get("/{execution_id}", response_model=IntegrationExecutionPublic, summary="Show an integration execution")
async def show_integration_execution(
        execution_id: int, session: SessionDep, caller: CurrentCaller,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS,
                                     description="seconds to wait for the execution to end before answering")] = 0,
) -> IntegrationExecutionPublic:
    """Status, timing, input, output, error, duration, attempts and workflow id."""
    return await wait_for_execution(session, caller.account_id, execution_id, wait)


@router.post("/{execution_id}/cancel", response_model=IntegrationExecutionPublic,
             status_code=status.HTTP_202_ACCEPTED, summary="Cancel an integration execution")
def cancel_integration_execution(execution_id: int, session: SessionDep, caller: WriterCaller, actor: ActorDep,
                                 temporal: TemporalDep) -> IntegrationExecutionPublic:
    """Ask the execution to stop (status ``cancelled`` shortly after); 409 when it has ended."""
    return execution_public(integration_workflows.cancel_execution(session, temporal, caller.account_id, actor, execution_id))
