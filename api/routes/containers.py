"""Container executions (the seed's ContainersController; templates are in
``container_templates``, the account's policy and quota in ``container_account``).

``POST /containers`` resolves a template and the caller's overrides into a spec, checks it
(422 naming the field; the unsafe options need the account's ``ContainerPolicy``), reserves
quota atomically (429 with the reason, or status ``queued`` with ``queue: true``), commits the
``ContainerInstance`` and starts ``ContainerExecutionWorkflow`` ``container-<id>``. The workflow
owns the instance from then on; the API only reads it and asks Temporal to cancel it.

Secret values never appear here:
a spec carries secret names, and the workflow masks values in the logs it stores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from activities import container_quota
from activities.containers import container_name
from adapters.network_targets import check_host
from adapters.temporal import TemporalGateway, is_not_found
from api import errors, idempotency
from api.container_schemas import (
    NULLABLE_TEMPLATE_FIELDS,
    ArtifactPublic,
    ContainerEventPublic,
    ContainerInstancePublic,
    ContainerInstancesPublic,
    ContainerInstanceSummary,
    ContainerLaunch,
)
from api.deps import CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from db.models import (
    Artifact,
    ContainerEvent,
    ContainerInstance,
    ContainerTemplate,
)
from domain.errors import QuotaExceeded, Unavailable
from domain.network_rules import url_host_port, worded_refusal
from domain.statuses import ContainerStatus
from services.container_specs import (
    SPEC_FIELDS,
    hardened,
    resolve_spec,
)
from services.containers import checked_spec, template_spec
from workflows.container_execution import (
    ContainerExecutionInput,
    ContainerExecutionWorkflow,
    container_workflow_id,
)

router = APIRouter(prefix="/containers", tags=["containers"])

ACCOUNT_ID = SearchAttributeKey.for_int("AccountId")


# ---- instances ------------------------------------------------------------------------------


def _callback_problem(url: str, allow_private: bool) -> str | None:
    """Why the callback URL is refused (not http(s), or an internal target), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL"
    if allow_private:
        return None
    try:
        check = check_host(*url_host_port(url), what="the callback URL's")
    except ValueError:  # an invalid port
        check = None
    if check is None or check.unresolvable:
        return f"host {parts.hostname!r} does not resolve"
    return worded_refusal(check, lead="") if check.problem else None


def _summary_fields(row: ContainerInstance) -> dict[str, Any]:
    return dict(
        id=row.id, name=row.name, status=row.status, image=row.image, image_digest=row.image_digest,
        template_id=row.template_id, host_id=row.host_id, run_id=row.run_id, step_id=row.step_id,
        attempt=row.attempt, exit_code=row.exit_code, error=row.error, reserved_cpu=row.reserved_cpu,
        reserved_memory_mb=row.reserved_memory_mb, reserved_storage_mb=row.reserved_storage_mb,
        timeout_seconds=row.timeout_seconds, workflow_id=row.workflow_id, created_by_user_id=row.created_by_user_id,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at, updated_at=row.updated_at,
    )


def instance_public(session: Session, row: ContainerInstance, temporal: TemporalGateway) -> ContainerInstancePublic:
    events = session.scalars(select(ContainerEvent).where(ContainerEvent.instance_id == row.id,
                                                          ContainerEvent.account_id == row.account_id)
                             .order_by(ContainerEvent.id)).all()
    artifacts = session.scalars(select(Artifact).where(Artifact.instance_id == row.id,
                                                       Artifact.account_id == row.account_id)
                                .order_by(Artifact.id)).all()
    return ContainerInstancePublic(
        **_summary_fields(row), spec=row.spec or {}, container_id=row.container_id, logs=row.logs or "",
        logs_truncated=row.logs_truncated, usage=row.usage or {}, violations=list(row.violations or []),
        artifacts=[ArtifactPublic(id=a.id, name=a.name, size_bytes=a.size_bytes, sha256=a.sha256, entries=a.entries,
                                  download_path=f"/api/v1/devops/containers/{row.id}/artifacts/{a.id}",
                                  created_at=a.created_at) for a in artifacts],
        events=[ContainerEventPublic(id=e.id, event_type=e.event_type, payload=e.payload or {},
                                     created_at=e.created_at) for e in events],
        callback_url=row.callback_url, callback_status=row.callback_status, a2a_task_id=row.a2a_task_id,
        temporal_ui_url=temporal.ui_url(row.workflow_id) if row.workflow_id else None,
    )


def _owned_instance(session: Session, account_id: int, instance_id: int) -> ContainerInstance:
    row = session.scalar(select(ContainerInstance).where(ContainerInstance.id == instance_id,
                                                         ContainerInstance.account_id == account_id))
    if row is None:
        raise errors.not_found("container")
    return row


def _event(row: ContainerInstance, event_type: str, payload: dict[str, Any], dedupe_key: str) -> ContainerEvent:
    return ContainerEvent(account_id=row.account_id, instance_id=row.id, event_type=event_type,
                          payload={"status": row.status, **payload}, dedupe_key=dedupe_key)


def _start_workflow(temporal: TemporalGateway, row: ContainerInstance, a2a_attempts: int) -> None:
    temporal.call(
        temporal.start,
        ContainerExecutionWorkflow.run,
        ContainerExecutionInput(instance_id=row.id, account_id=row.account_id,
                                a2a_callback_attempts=a2a_attempts if row.callback_url else 0),
        id=container_workflow_id(row.id),
        search_attributes=TypedSearchAttributes([SearchAttributePair(ACCOUNT_ID, row.account_id)]),
        static_summary=f"container {row.name} ({row.image})",
    )


@router.post("", response_model=ContainerInstancePublic, status_code=status.HTTP_201_CREATED, responses={
    429: {"description": "over the account's quota (the reason names the limit; `queue: true` waits instead), "
                         "or too many failed sign-ins from this address"}})
def launch_container(body: ContainerLaunch, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                     settings: SettingsDep, request: Request, response: Response,
                     idempotency_key: idempotency.KeyHeader = None) -> ContainerInstancePublic:
    """Run a container: a template (``template_id``) and/or the fields sent, checked like a
    template (422 naming the field). Over quota: 429 with the reason and nothing kept, or with
    ``queue: true`` status ``queued`` until quota frees up. 201 with the instance; 503 (and the
    instance marked failed) when Temporal is unavailable. With an ``Idempotency-Key`` the same
    request again within 24 h answers the first instance, never a second one."""
    overrides = body.model_dump(mode="json", exclude_unset=True)
    idem = idempotency.for_request(session, request, idempotency_key, account_id=caller.account_id,
                                   scope="containers.create", resource_type="container_instance", body=overrides)

    def render(instance_id: int) -> ContainerInstancePublic:
        return instance_public(session, _owned_instance(session, caller.account_id, instance_id), temporal)

    if idem is not None and (found := idem.existing()) is not None:
        return idempotency.replay(response, found, render)
    nulls = [name for name in SPEC_FIELDS if name in overrides and overrides[name] is None
             and name not in NULLABLE_TEMPLATE_FIELDS]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "type": "null", "msg": "may not be null"}
                                    for name in nulls])
    template = None
    if body.template_id is not None:
        template = session.scalar(select(ContainerTemplate).where(ContainerTemplate.id == body.template_id,
                                                                  ContainerTemplate.account_id == caller.account_id))
        if template is None:
            raise errors.field_error(["template_id"], f"the account has no container template {body.template_id}")
    spec = checked_spec(session, caller.account_id,
                        resolve_spec(template_spec(template) if template else None, overrides), settings)
    if body.callback_url is not None:
        problem = _callback_problem(body.callback_url, settings.private_targets_allowed)
        if problem:
            raise errors.field_error(["callback_url"], problem)

    if idem is not None and not idem.claim():  # a concurrent request with this key won
        return idempotency.replay(response, idem.wait_existing(), render)
    row = ContainerInstance(
        account_id=caller.account_id, template_id=template.id if template else None, status="queued",
        image=spec["image"], spec=hardened(spec, template.id if template else None),
        reserved_cpu=spec["cpu_limit"], reserved_memory_mb=spec["memory_mb"], reserved_storage_mb=spec["storage_mb"],
        timeout_seconds=spec["timeout_seconds"], callback_url=body.callback_url, created_by_user_id=caller.user_id,
        a2a_task_id=body.a2a_task_id,
    )
    session.add(row)
    session.flush()
    row.name = container_name(row.id, settings)
    row.workflow_id = container_workflow_id(row.id)
    quota = container_quota.quota_for(session, caller.account_id)
    own = container_quota.exceeds_limits(quota, row)
    if own:
        session.rollback()
        raise errors.unprocessable([{"loc": ["body", name], "type": "value_error", "msg": reason}
                                    for name, reason in own])
    reason = container_quota.try_reserve(session, row)
    if reason is not None and not body.queue:
        session.rollback()
        raise QuotaExceeded(reason)
    session.add(_event(row, "created", {"reason": reason} if reason else {}, "api-created"))
    if idem is not None:
        idem.attach(row.id)
    session.commit()

    try:
        _start_workflow(temporal, row, settings.a2a_callback_max_attempts)
    except Exception as exc:  # Temporal unreachable or refusing: say so, keep the row honest
        row.status = "failed"
        row.error = f"the container could not be started: Temporal did not accept it ({type(exc).__name__})"
        row.finished_at = datetime.now(UTC)
        session.add(_event(row, "failed", {"error": row.error}, "api-start-failed"))
        session.commit()
        raise Unavailable(f"container {row.id} was recorded but could not be started: Temporal is unavailable"
                          ) from exc
    return instance_public(session, row, temporal)


@router.get("", response_model=ContainerInstancesPublic)
def list_containers(session: SessionDep, caller: CurrentCaller,
                    status_: Annotated[str | None, Query(alias="status", max_length=20,
                                                         description=", ".join(ContainerStatus))] = None,
                    run_id: int | None = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    offset: Annotated[int, Query(ge=0)] = 0) -> ContainerInstancesPublic:
    """The account's container executions, newest first (without logs and events: show one for those)."""
    query = select(ContainerInstance).where(ContainerInstance.account_id == caller.account_id)
    if status_ is not None:
        query = query.where(ContainerInstance.status == status_)
    if run_id is not None:
        query = query.where(ContainerInstance.run_id == run_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(ContainerInstance.id.desc()).limit(limit).offset(offset)).all()
    return ContainerInstancesPublic(data=[ContainerInstanceSummary(**_summary_fields(r)) for r in rows], count=count)


@router.get("/{instance_id}", response_model=ContainerInstancePublic)
def show_container(instance_id: int, session: SessionDep, caller: CurrentCaller,
                   temporal: TemporalDep) -> ContainerInstancePublic:
    """Everything about one execution: spec (secret names only), status, image digest, exit
    code, logs (capped at 100 KB), usage, violations, artifacts, events, Temporal UI link."""
    return instance_public(session, _owned_instance(session, caller.account_id, instance_id), temporal)


async def _cancel_workflow(temporal: TemporalGateway, workflow_id: str) -> bool:
    """Request cancellation; False when there is no such workflow or it has already closed."""
    try:
        if (await temporal.describe(workflow_id)).status != WorkflowExecutionStatus.RUNNING:
            return False
    except RPCError as exc:
        if not is_not_found(exc):
            raise
        return False
    return await temporal.cancel(workflow_id)


@router.post("/{instance_id}/cancel", response_model=ContainerInstancePublic,
                       status_code=status.HTTP_202_ACCEPTED)
def cancel_container(instance_id: int, session: SessionDep, caller: WriterCaller,
                     temporal: TemporalDep) -> ContainerInstancePublic:
    """Ask the execution to stop: its container is killed and removed, status ``cancelled``
    shortly after (202). One still ``queued`` is cancelled at once. 409 when it has ended."""
    row = _owned_instance(session, caller.account_id, instance_id)
    if row.status in container_quota.FINAL_STATUSES:
        raise errors.conflict(f"container {row.id} already ended with status {row.status}")
    withdrawn = False
    if row.status == "queued":
        # Conditional: the workflow may be promoting it under the quota lock at this moment.
        result = session.execute(
            update(ContainerInstance)
            .where(ContainerInstance.id == row.id, ContainerInstance.status == "queued")
            .values(status="cancelled", finished_at=datetime.now(UTC), error="cancelled while queued")
            .execution_options(synchronize_session=False))
        withdrawn = result.rowcount == 1
        if withdrawn:
            session.add(ContainerEvent(account_id=row.account_id, instance_id=row.id, event_type="cancelled",
                                       payload={"status": "cancelled", "while": "queued"}, dedupe_key="api-cancelled"))
        session.commit()
    try:
        accepted = temporal.call(_cancel_workflow, temporal, row.workflow_id or container_workflow_id(row.id))
    except Exception as exc:
        if not withdrawn:
            raise Unavailable(f"container {row.id} was not cancelled: Temporal is unavailable") from exc
        accepted = False
    session.expire_all()
    row = _owned_instance(session, caller.account_id, instance_id)
    if not accepted and not withdrawn and row.status not in container_quota.FINAL_STATUSES:
        raise errors.conflict(f"container {row.id} is no longer running")
    return instance_public(session, row, temporal)


@router.get("/{instance_id}/artifacts/{artifact_id}", response_class=FileResponse,
                      responses={200: {"content": {"application/x-tar": {}}}})
def download_container_artifact(instance_id: int, artifact_id: int, session: SessionDep, caller: CurrentCaller,
                                settings: SettingsDep) -> FileResponse:
    """The stored tar of one of the execution's artifacts."""
    row = _owned_instance(session, caller.account_id, instance_id)
    artifact = session.scalar(select(Artifact).where(Artifact.id == artifact_id, Artifact.instance_id == row.id,
                                                     Artifact.account_id == caller.account_id))
    if artifact is None:
        raise errors.not_found("artifact")
    store = settings.resolved_artifact_dir
    path = (store / artifact.store_key).resolve()
    if not path.is_relative_to(store) or not path.is_file():
        raise errors.not_found("artifact file")
    filename = artifact.name if artifact.name.endswith(".tar") else f"{artifact.name}.tar"
    return FileResponse(path, media_type="application/x-tar", filename=filename)
