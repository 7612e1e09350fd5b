"""``/integration_instances``: templates installed in the account, and running them
(``POST /integration_instances/{instance_id}/execute`` starts an ``IntegrationExecutionWorkflow``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from api import errors
from api.deps import ActorDep, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.integration_schemas import (
    IntegrationExecute,
    IntegrationExecutionPublic,
    IntegrationInstanceCreate,
    IntegrationInstancePublic,
    IntegrationInstanceUpdate,
)
from api.pages import Page
from db.integration_models import IntegrationExecution, IntegrationInstance
from domain.integrations import FINISHED_EXECUTION, InstanceStatus
from services import integration_executions as executions
from services import integration_instances as services
from services import integration_workflows

router = APIRouter(prefix="/integration_instances", tags=["integrations"])
MAX_WAIT_SECONDS = 60.0
WAIT_POLL_SECONDS = 0.2


def instance_public(row: IntegrationInstance) -> IntegrationInstancePublic:
    return IntegrationInstancePublic(
        id=row.id, template_id=row.template_id, name=row.name, configuration=row.configuration or {},
        credential_id=row.credential_id, status=row.status, execution_count=row.execution_count,
        success_count=row.success_count, failure_count=row.failure_count, last_executed_at=row.last_executed_at,
        created_at=row.created_at, updated_at=row.updated_at)


def execution_public(row: IntegrationExecution) -> IntegrationExecutionPublic:
    return IntegrationExecutionPublic(
        id=row.id, instance_id=row.instance_id, status=row.status, trigger_type=row.trigger_type, run_id=row.run_id,
        step_id=row.step_id, input=row.input or {}, output=row.output or {}, error=row.error, attempts=row.attempts,
        workflow_id=row.workflow_id, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, duration_ms=row.duration_ms)


async def wait_for_execution(session: Any, account_id: int, execution_id: int, wait: float) -> IntegrationExecutionPublic:
    """The execution once it has ended, or when ``wait`` seconds are over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait

    def read() -> IntegrationExecutionPublic:
        session.expire_all()
        return execution_public(executions.owned_execution(session, account_id, execution_id))

    while True:
        current = await run_in_threadpool(read)
        if current.status in FINISHED_EXECUTION or loop.time() >= deadline:
            return current
        await asyncio.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - loop.time())))


@router.get("", response_model=Page[IntegrationInstancePublic], summary="List integration instances")
def list_integration_instances(session: SessionDep, caller: CurrentCaller, template_id: int | None = None,
                               status_: Annotated[InstanceStatus | None, Query(alias="status")] = None,
                               limit: Annotated[int, Query(ge=1, le=200)] = 50,
                               offset: Annotated[int, Query(ge=0)] = 0) -> Page[IntegrationInstancePublic]:
    """The account's instances by name; filter by template or status."""
    rows, count = services.list_instances(session, caller.account_id, template_id=template_id, status=status_,
                                          limit=limit, offset=offset)
    return Page(data=[instance_public(r) for r in rows], count=count)


@router.post("", response_model=IntegrationInstancePublic, status_code=status.HTTP_201_CREATED,
             summary="Install an integration")
def create_integration_instance(body: IntegrationInstanceCreate, session: SessionDep, caller: WriterCaller,
                                actor: ActorDep) -> IntegrationInstancePublic:
    """An instance of a template (the account's or a public one): the configuration merged over
    the template's defaults must match its configuration schema (422 whose ``loc`` ends with the
    JSON pointer), and the credential must carry every required field (422 naming it)."""
    row = services.create_instance(session, caller.account_id, actor, template_id=body.template_id, name=body.name,
                                   configuration=body.configuration, credential_id=body.credential_id)
    return instance_public(row)


@router.get("/{instance_id}", response_model=IntegrationInstancePublic, summary="Show an integration instance")
def show_integration_instance(instance_id: int, session: SessionDep, caller: CurrentCaller) -> IntegrationInstancePublic:
    """One instance with its counters."""
    return instance_public(services.owned_instance(session, caller.account_id, instance_id))


@router.patch("/{instance_id}", response_model=IntegrationInstancePublic, summary="Change an integration instance")
def update_integration_instance(instance_id: int, body: IntegrationInstanceUpdate, session: SessionDep,
                                caller: WriterCaller, actor: ActorDep) -> IntegrationInstancePublic:
    """Rename it, replace its configuration or credential (checked as on create), or pause and
    resume it (``status``: a paused instance refuses to execute)."""
    changes = body.model_dump(mode="json", exclude_unset=True)
    nulls = [name for name in ("name", "configuration", "status") if name in changes and changes[name] is None]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", n], "msg": "may not be null", "type": "null"} for n in nulls])
    return instance_public(services.update_instance(session, caller.account_id, actor, instance_id, changes))


@router.delete("/{instance_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an integration instance")
def delete_integration_instance(instance_id: int, session: SessionDep, caller: WriterCaller,
                                actor: ActorDep) -> Response:
    """Delete the instance and its execution records."""
    services.delete_instance(session, caller.account_id, actor, instance_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _start_execution(body: IntegrationExecute, session: Any, caller: Any, actor: Any, temporal: Any, settings: Any,
                     instance_id: int) -> int:
    row = executions.create_execution(session, caller.account_id, actor, instance_id, body.inputs,
                                      user_id=caller.user_id)
    integration_workflows.start_workflow(session, temporal, settings, row)
    return row.id


@router.post("/{instance_id}/execute", response_model=IntegrationExecutionPublic,
             status_code=status.HTTP_202_ACCEPTED, summary="Execute an integration instance")
async def execute_integration_instance(
        instance_id: int, body: IntegrationExecute, session: SessionDep, caller: WriterCaller, actor: ActorDep,
        temporal: TemporalDep, settings: SettingsDep,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS,
                                     description="seconds to wait for the execution to end before answering")] = 0,
) -> IntegrationExecutionPublic:
    """Start an execution (202): the inputs must match the template's input schema (422 whose
    ``loc`` ends with the JSON pointer); 409 for a paused instance; 503 (the execution marked
    failed) when Temporal does not accept it. With ``wait`` the answer comes when it ends."""
    execution_id = await run_in_threadpool(_start_execution, body, session, caller, actor, temporal, settings,
                                           instance_id)
    return await wait_for_execution(session, caller.account_id, execution_id, wait)
