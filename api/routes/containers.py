"""Containers: templates, the account's policy and quota, and executions (the seed's
ContainersController).

``POST /containers`` resolves a template and the caller's overrides into a spec, checks it
(422 naming the field; the unsafe options need the account's ``ContainerPolicy``), reserves
quota atomically (429 with the reason, or status ``queued`` with ``queue: true``), commits the
``ContainerInstance`` and starts ``ContainerExecutionWorkflow`` ``container-<id>``. The workflow
owns the instance from then on; the API only reads it and asks Temporal to cancel it.

The policy and the quota are changed by account admins only. Secret values never appear here:
a spec carries secret names, and the workflow masks values in the logs it stores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from anyio import from_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities import container_quota
from activities.containers import container_name
from adapters.network_targets import check_host
from adapters.temporal import TemporalGateway
from api import errors, idempotency
from api.container_schemas import (
    ArtifactPublic,
    ContainerEventPublic,
    ContainerInstancePublic,
    ContainerInstancesPublic,
    ContainerInstanceSummary,
    ContainerLaunch,
    ContainerPolicyPublic,
    ContainerPolicyUpdate,
    ContainerQuotaLimits,
    ContainerQuotaPublic,
    ContainerQuotaUpdate,
    ContainerQuotaUsage,
    ContainerTemplateCreate,
    ContainerTemplatePublic,
    ContainerTemplatesPublic,
    ContainerTemplateUpdate,
)
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from db.models import (
    Artifact,
    ContainerEvent,
    ContainerInstance,
    ContainerPolicy,
    ContainerTemplate,
)
from domain.network_rules import url_host_port, worded_refusal
from services.container_specs import (
    CAPABILITY,
    SPEC_FIELDS,
    clean_absolute_path,
    hardened,
    normalize_capability,
    resolve_spec,
)
from services.containers import checked_spec, template_spec
from settings import Settings
from workflows.container_execution import (
    ContainerExecutionInput,
    ContainerExecutionWorkflow,
    container_workflow_id,
)

templates_router = APIRouter(prefix="/container_templates", tags=["containers"])
account_router = APIRouter(tags=["containers"])
instances_router = APIRouter(prefix="/containers", tags=["containers"])
routers = (templates_router, account_router, instances_router)

ACCOUNT_ID = SearchAttributeKey.for_int("AccountId")


def require_admin(caller: CurrentCaller) -> Caller:
    if caller.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"your role is {caller.role}: only an account admin can change this")
    return caller


AdminCaller = Annotated[Caller, Depends(require_admin)]


# ---- shared helpers ---------------------------------------------------------------------------


def _commit_or_conflict(session: Session, message: str) -> None:
    try:
        session.commit()
    except IntegrityError:  # a concurrent request took the name between our check and the insert
        session.rollback()
        raise errors.conflict(message) from None


# ---- templates ------------------------------------------------------------------------------


def _template_public(row: ContainerTemplate) -> ContainerTemplatePublic:
    return ContainerTemplatePublic(
        id=row.id, name=row.name, description=row.description, image=row.image, command=list(row.command or []),
        entrypoint=row.entrypoint, working_dir=row.working_dir, env=dict(row.env or {}),
        secret_env=dict(row.secret_env or {}), cpu_limit=row.cpu_limit, memory_mb=row.memory_mb,
        pids_limit=row.pids_limit, storage_mb=row.storage_mb, network_mode=row.network_mode,
        timeout_seconds=row.timeout_seconds, artifact_paths=list(row.artifact_paths or []),
        labels=dict(row.labels or {}), user=row.user, read_only_rootfs=row.read_only_rootfs,
        privileged=row.privileged, cap_add=list(row.cap_add or []), bind_mounts=list(row.bind_mounts or []),
        created_at=row.created_at, updated_at=row.updated_at,
    )


def _owned_template(session: Session, account_id: int, template_id: int) -> ContainerTemplate:
    row = session.scalar(select(ContainerTemplate).where(ContainerTemplate.id == template_id,
                                                         ContainerTemplate.account_id == account_id))
    if row is None:
        raise errors.not_found("container template")
    return row


def _template_name_taken(session: Session, account_id: int, name: str, exclude_id: int | None = None) -> bool:
    query = select(ContainerTemplate.id).where(ContainerTemplate.account_id == account_id,
                                               ContainerTemplate.name == name)
    if exclude_id is not None:
        query = query.where(ContainerTemplate.id != exclude_id)
    return session.scalar(query) is not None


@templates_router.get("", response_model=ContainerTemplatesPublic)
def list_templates(session: SessionDep, caller: CurrentCaller) -> ContainerTemplatesPublic:
    rows = session.scalars(select(ContainerTemplate).where(ContainerTemplate.account_id == caller.account_id)
                           .order_by(ContainerTemplate.name)).all()
    return ContainerTemplatesPublic(data=[_template_public(r) for r in rows], count=len(rows))


@templates_router.post("", response_model=ContainerTemplatePublic, status_code=status.HTTP_201_CREATED)
def create_template(body: ContainerTemplateCreate, session: SessionDep,
                    caller: WriterCaller, settings: SettingsDep) -> ContainerTemplatePublic:
    """Save a template. Safe by default; ``privileged``, ``network_mode: host``, ``cap_add`` and
    ``bind_mounts`` are refused (422 naming the field) unless the account's policy allows them."""
    values = body.model_dump(mode="json")
    spec = checked_spec(session, caller.account_id, resolve_spec(None, values), settings)
    if _template_name_taken(session, caller.account_id, body.name):
        raise errors.conflict(f"a container template named {body.name!r} already exists")
    row = ContainerTemplate(account_id=caller.account_id, name=body.name, description=body.description, **spec)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(f"a container template named {body.name!r} already exists") from None
    if spec["user"] is None:  # on insert, None means "the column default" (nobody) to the ORM
        session.execute(update(ContainerTemplate).where(ContainerTemplate.id == row.id).values(user=None))
        session.refresh(row)
    _commit_or_conflict(session, f"a container template named {body.name!r} already exists")
    return _template_public(row)


@templates_router.get("/{template_id}", response_model=ContainerTemplatePublic)
def show_template(template_id: int, session: SessionDep, caller: CurrentCaller) -> ContainerTemplatePublic:
    return _template_public(_owned_template(session, caller.account_id, template_id))


NULLABLE_TEMPLATE_FIELDS = ("entrypoint", "user")


@templates_router.patch("/{template_id}", response_model=ContainerTemplatePublic)
def update_template(template_id: int, body: ContainerTemplateUpdate, session: SessionDep,
                    caller: WriterCaller, settings: SettingsDep) -> ContainerTemplatePublic:
    """Change some fields; the result is checked as a whole, against today's policy."""
    row = _owned_template(session, caller.account_id, template_id)
    changes = body.model_dump(mode="json", exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None and name not in NULLABLE_TEMPLATE_FIELDS]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "type": "null", "msg": "may not be null"}
                                    for name in nulls])
    merged = {**template_spec(row), **{k: v for k, v in changes.items() if k in SPEC_FIELDS}}
    spec = checked_spec(session, caller.account_id, merged, settings)
    if "name" in changes and _template_name_taken(session, caller.account_id, changes["name"], exclude_id=row.id):
        raise errors.conflict(f"a container template named {changes['name']!r} already exists")
    for name, value in spec.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
    for name in ("name", "description"):
        if name in changes:
            setattr(row, name, changes[name])
    _commit_or_conflict(session, f"a container template named {row.name!r} already exists")
    return _template_public(row)


@templates_router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_template(template_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    """Delete a template; instances started from it keep their resolved spec."""
    row = _owned_template(session, caller.account_id, template_id)
    session.execute(update(ContainerInstance).where(ContainerInstance.template_id == row.id)
                    .values(template_id=None).execution_options(synchronize_session=False))
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- policy and quota -----------------------------------------------------------------------


def _policy_public(row: ContainerPolicy | None) -> ContainerPolicyPublic:
    if row is None:
        return ContainerPolicyPublic(allow_privileged=False, allow_host_network=False, allowed_capabilities=[],
                                     allowed_bind_paths=[], updated_at=None)
    return ContainerPolicyPublic(allow_privileged=row.allow_privileged, allow_host_network=row.allow_host_network,
                                 allowed_capabilities=list(row.allowed_capabilities or []),
                                 allowed_bind_paths=list(row.allowed_bind_paths or []), updated_at=row.updated_at)


@account_router.get("/container_policy", response_model=ContainerPolicyPublic)
def show_policy(session: SessionDep, caller: CurrentCaller) -> ContainerPolicyPublic:
    """What the account allows beyond the safe defaults (nothing until an admin says so)."""
    return _policy_public(session.scalar(select(ContainerPolicy)
                                         .where(ContainerPolicy.account_id == caller.account_id)))


@account_router.put("/container_policy", response_model=ContainerPolicyPublic)
def put_policy(body: ContainerPolicyUpdate, session: SessionDep, caller: AdminCaller) -> ContainerPolicyPublic:
    """Allow (or stop allowing) privileged mode, the host network, named capabilities and bind
    mounts under host path prefixes. Account admins only; only the fields sent change. Templates
    saved earlier are checked again at every launch, so withdrawing a permission takes effect."""
    changes = body.model_dump(exclude_unset=True)
    problems: list[dict[str, Any]] = []
    nulls = [name for name, value in changes.items() if value is None]
    problems += [{"loc": ["body", name], "type": "null", "msg": "may not be null"} for name in nulls]
    if changes.get("allowed_capabilities"):
        caps = [normalize_capability(c) for c in changes["allowed_capabilities"]]
        for index, cap in enumerate(caps):
            if not CAPABILITY.match(cap):
                problems.append({"loc": ["body", "allowed_capabilities", index], "type": "value_error",
                                 "msg": "not a capability name (e.g. NET_BIND_SERVICE)"})
        changes["allowed_capabilities"] = sorted(set(caps))
    if changes.get("allowed_bind_paths"):
        paths = []
        for index, path in enumerate(changes["allowed_bind_paths"]):
            clean = clean_absolute_path(path)
            if clean is None:
                problems.append({"loc": ["body", "allowed_bind_paths", index], "type": "value_error",
                                 "msg": "must be an absolute host path without '..'"})
            else:
                paths.append(clean)
        changes["allowed_bind_paths"] = sorted(set(paths))
    if problems:
        raise errors.unprocessable(problems)
    row = session.scalar(select(ContainerPolicy).where(ContainerPolicy.account_id == caller.account_id))
    if row is None:
        row = ContainerPolicy(account_id=caller.account_id, allowed_capabilities=[], allowed_bind_paths=[])
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = datetime.now(UTC)
    _commit_or_conflict(session, "the policy was changed concurrently; try again")
    return _policy_public(row)


def _quota_public(session: Session, account_id: int) -> ContainerQuotaPublic:
    quota = container_quota.quota_for(session, account_id)
    used = container_quota.usage(session, account_id)
    queued = container_quota.queued_count(session, account_id)
    session.commit()  # the default row, when it was just created
    return ContainerQuotaPublic(
        limits=ContainerQuotaLimits(max_concurrent=quota.max_concurrent, max_cpu=quota.max_cpu,
                                    max_memory_mb=quota.max_memory_mb, max_storage_mb=quota.max_storage_mb,
                                    max_duration_seconds=quota.max_duration_seconds),
        usage=ContainerQuotaUsage(**used), queued=queued)


@account_router.get("/container_quotas", response_model=ContainerQuotaPublic)
def show_quota(session: SessionDep, caller: CurrentCaller) -> ContainerQuotaPublic:
    """The account's limits and what its pending, provisioning and running instances use."""
    return _quota_public(session, caller.account_id)


@account_router.put("/container_quotas", response_model=ContainerQuotaPublic)
def put_quota(body: ContainerQuotaUpdate, session: SessionDep, caller: AdminCaller) -> ContainerQuotaPublic:
    """Change the limits (account admins only; only the fields sent change). Lowering a limit
    stops nothing that runs: it applies to the next reservations."""
    changes = body.model_dump(exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "type": "null", "msg": "may not be null"}
                                    for name in nulls])
    quota = container_quota.quota_for(session, caller.account_id)
    for name, value in changes.items():
        setattr(quota, name, value)
    session.commit()
    return _quota_public(session, caller.account_id)


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
        callback_url=row.callback_url, callback_status=row.callback_status,
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


async def start_container_workflow(temporal: TemporalGateway, settings: Settings, row: ContainerInstance) -> None:
    client = await temporal.client()
    await client.start_workflow(
        ContainerExecutionWorkflow.run,
        ContainerExecutionInput(instance_id=row.id, account_id=row.account_id),
        id=container_workflow_id(row.id),
        task_queue=settings.task_queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(ACCOUNT_ID, row.account_id)]),
        static_summary=f"container {row.name} ({row.image})",
    )


@instances_router.post("", response_model=ContainerInstancePublic, status_code=status.HTTP_201_CREATED)
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
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, reason)
    session.add(_event(row, "created", {"reason": reason} if reason else {}, "api-created"))
    if idem is not None:
        idem.attach(row.id)
    session.commit()

    try:
        from_thread.run(start_container_workflow, temporal, settings, row)
    except Exception as exc:  # Temporal unreachable or refusing: say so, keep the row honest
        row.status = "failed"
        row.error = f"the container could not be started: Temporal did not accept it ({type(exc).__name__})"
        row.finished_at = datetime.now(UTC)
        session.add(_event(row, "failed", {"error": row.error}, "api-start-failed"))
        session.commit()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"container {row.id} was recorded but could not be started: Temporal is unavailable"
                            ) from exc
    return instance_public(session, row, temporal)


@instances_router.get("", response_model=ContainerInstancesPublic)
def list_containers(session: SessionDep, caller: CurrentCaller,
                    status_: Annotated[str | None, Query(alias="status", max_length=20)] = None,
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


@instances_router.get("/{instance_id}", response_model=ContainerInstancePublic)
def show_container(instance_id: int, session: SessionDep, caller: CurrentCaller,
                   temporal: TemporalDep) -> ContainerInstancePublic:
    """Everything about one execution: spec (secret names only), status, image digest, exit
    code, logs (capped at 100 KB), usage, violations, artifacts, events, Temporal UI link."""
    return instance_public(session, _owned_instance(session, caller.account_id, instance_id), temporal)


async def cancel_container_workflow(temporal: TemporalGateway, workflow_id: str) -> bool:
    """Request cancellation; False when there is no such workflow or it has already closed."""
    client = await temporal.client()
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            return False
        await handle.cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


@instances_router.post("/{instance_id}/cancel", response_model=ContainerInstancePublic,
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
        accepted = from_thread.run(cancel_container_workflow, temporal, row.workflow_id or
                                   container_workflow_id(row.id))
    except Exception as exc:
        if not withdrawn:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                f"container {row.id} was not cancelled: Temporal is unavailable") from exc
        accepted = False
    session.expire_all()
    row = _owned_instance(session, caller.account_id, instance_id)
    if not accepted and not withdrawn and row.status not in container_quota.FINAL_STATUSES:
        raise errors.conflict(f"container {row.id} is no longer running")
    return instance_public(session, row, temporal)


@instances_router.get("/{instance_id}/artifacts/{artifact_id}", response_class=FileResponse,
                      responses={200: {"content": {"application/x-tar": {}}}})
def download_artifact(instance_id: int, artifact_id: int, session: SessionDep, caller: CurrentCaller,
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
