"""Integration executions: create one (inputs checked against the template's ``input_schema``)
and the database side of the workflow's activities (load for the executor, record the outcome).
Starting and cancelling the workflow is ``services.integration_workflows`` (it imports the
workflow, which imports the activities that use this module).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.integration_models import (
    IntegrationCredential,
    IntegrationExecution,
    IntegrationInstance,
    IntegrationTemplate,
)
from domain import errors
from domain.integrations import (
    FINISHED_EXECUTION,
    ExecutionStatus,
    execution_workflow_id,
    merged_configuration,
)
from domain.json_schemas import problems, validate
from services import audit
from services.integration_instances import instance_by_reference, owned_instance, template_of
from services.integrations import credential_fields
from settings import Settings


def list_executions(session: Session, account_id: int, *, instance_id: int | None = None, status: str | None = None,
                    run_id: int | None = None, limit: int = 50,
                    offset: int = 0) -> tuple[list[IntegrationExecution], int]:
    query = select(IntegrationExecution).where(IntegrationExecution.account_id == account_id)
    if instance_id is not None:
        query = query.where(IntegrationExecution.instance_id == instance_id)
    if status:
        query = query.where(IntegrationExecution.status == status)
    if run_id is not None:
        query = query.where(IntegrationExecution.run_id == run_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IntegrationExecution.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), count


def owned_execution(session: Session, account_id: int, execution_id: int) -> IntegrationExecution:
    row = session.scalar(select(IntegrationExecution).where(IntegrationExecution.id == execution_id,
                                                            IntegrationExecution.account_id == account_id))
    if row is None:
        raise errors.not_found("integration execution")
    return row


def _new_execution(session: Session, instance: IntegrationInstance, inputs: dict[str, Any], field: list[Any],
                   **values: Any) -> IntegrationExecution:
    if instance.status != "active":
        raise errors.conflict(f"integration instance {instance.name!r} is {instance.status}: resume it first")
    validate(inputs, template_of(session, instance).input_schema or {}, field)
    row = IntegrationExecution(account_id=instance.account_id, instance_id=instance.id, input=inputs, **values)
    session.add(row)
    session.flush()
    row.workflow_id = execution_workflow_id(row.id)
    return row


def create_execution(session: Session, account_id: int, actor: audit.Actor, instance_id: int,
                     inputs: dict[str, Any], user_id: int | None = None) -> IntegrationExecution:
    instance = owned_instance(session, account_id, instance_id)
    row = _new_execution(session, instance, inputs, ["body", "inputs"], trigger_type="api",
                         created_by_user_id=user_id)
    audit.record(session, account_id, actor, "integration_execution.started", target_type="integration_execution",
                 target_id=row.id, details={"instance_id": instance.id, "instance_name": instance.name})
    session.commit()
    return row


def problem_text(exc: errors.DomainError) -> str:
    if isinstance(exc, errors.Invalid):
        return "; ".join(str(p.get("msg")) for p in exc.errors())
    return str(exc.detail)


# ---- the workflow's side ----------------------------------------------------------------------------------


def create_for_step(sessions: sessionmaker[Session], account_id: int, run_id: int, step_id: str,
                    params: dict[str, Any]) -> tuple[int, str]:
    """The execution of an ``integration`` step (``with: {instance, inputs}``); the one a retried
    activity already made is reused."""
    reference = params.get("instance")
    inputs = params.get("inputs") or {}
    if reference is None or str(reference).strip() == "":
        raise errors.field_error(["with", "instance"], "an integration step needs `with.instance`: an instance name or id")
    if not isinstance(inputs, dict):
        raise errors.field_error(["with", "inputs"], "`with.inputs` must be a mapping")
    with sessions() as session:
        instance = instance_by_reference(session, account_id, reference)
        if instance is None:
            raise errors.NotFound(f"integration instance {str(reference)!r} not found in this account")
        pending = session.scalar(select(IntegrationExecution).where(
            IntegrationExecution.account_id == account_id, IntegrationExecution.run_id == run_id,
            IntegrationExecution.step_id == step_id, IntegrationExecution.status == "pending"))
        if pending is not None:
            return pending.id, pending.workflow_id or execution_workflow_id(pending.id)
        try:
            row = _new_execution(session, instance, inputs, ["with", "inputs"], trigger_type="pipeline",
                                 run_id=run_id, step_id=step_id)
        except errors.Invalid as exc:
            raise errors.Invalid([{**p, "msg": f"inputs of {instance.name!r} break its input_schema at {p['msg']}"}
                                  for p in exc.errors()]) from None
        audit.record(session, account_id, audit.SYSTEM, "integration_execution.started",
                     target_type="integration_execution", target_id=row.id,
                     details={"instance_id": instance.id, "instance_name": instance.name, "run_id": run_id,
                              "step_id": step_id})
        session.commit()
        return row.id, row.workflow_id or execution_workflow_id(row.id)


def load_for_executor(sessions: sessionmaker[Session], settings: Settings, account_id: int, execution_id: int, *,
                      attempt: int, starting: bool) -> str | tuple[str, dict[str, Any], dict[str, str], dict[str, Any]]:
    """(type, merged configuration, decrypted credential fields, inputs) of an execution, marking it
    running; or its status when it has already ended."""
    with sessions() as session:
        row = owned_execution(session, account_id, execution_id)
        if row.status in FINISHED_EXECUTION:
            return row.status
        instance = session.get(IntegrationInstance, row.instance_id)
        template = session.get(IntegrationTemplate, instance.template_id) if instance else None
        if instance is None or template is None:
            raise errors.NotFound("the execution's integration instance no longer exists")
        credentials: dict[str, str] = {}
        if instance.credential_id is not None:
            credential = session.scalar(select(IntegrationCredential).where(
                IntegrationCredential.id == instance.credential_id, IntegrationCredential.account_id == account_id))
            if credential is not None:
                credentials = credential_fields(settings, credential)
        if starting:
            row.status = ExecutionStatus.RUNNING
            row.started_at = row.started_at or datetime.now(UTC)
            row.attempts = attempt
            session.commit()
        return (template.integration_type, merged_configuration(template.default_configuration, instance.configuration),
                credentials, dict(row.input or {}))


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_outcome(sessions: sessionmaker[Session], account_id: int, execution_id: int, status: str,
                   outputs: dict[str, Any], error: str | None) -> tuple[str, dict[str, Any], str | None]:
    """Write the outcome (once: a retried call answers what was recorded) and the counters. A
    success whose outputs break the template's ``output_schema`` is recorded as a failure naming
    the pointer."""
    with sessions() as session:
        row = owned_execution(session, account_id, execution_id)
        if row.status in FINISHED_EXECUTION:
            return row.status, dict(row.output or {}), row.error
        instance = session.get(IntegrationInstance, row.instance_id)
        template = session.get(IntegrationTemplate, instance.template_id) if instance else None
        if status == "success" and template is not None:
            found = problems(outputs, template.output_schema or {})
            if found:
                status = "failure"
                error = "the outputs do not match the template's output_schema: " + "; ".join(
                    f"{where}: {message}" for where, message in found)
        now = datetime.now(UTC)
        row.status = status
        row.output = outputs or {}
        row.error = error
        row.finished_at = now
        row.duration_ms = int((now - _utc(row.started_at or row.created_at)).total_seconds() * 1000)
        if instance is not None and status in ("success", "failure"):
            counter = IntegrationInstance.success_count if status == "success" else IntegrationInstance.failure_count
            session.execute(update(IntegrationInstance).where(IntegrationInstance.id == instance.id).values(
                {IntegrationInstance.execution_count: IntegrationInstance.execution_count + 1,
                 counter: counter + 1, IntegrationInstance.last_executed_at: now}))
            session.execute(update(IntegrationTemplate).where(IntegrationTemplate.id == template.id)
                            .values(usage_count=IntegrationTemplate.usage_count + 1))
        session.commit()
        return status, dict(row.output or {}), row.error
