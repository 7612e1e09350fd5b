"""Rollouts on Docker Swarm: ``/swarm/deployments`` (the seed's deployments, with Argo-style
control).

``POST /swarm/deployments`` checks the strategy (422 naming the field), that the cluster is the
caller's (404), and that the service and image exist on it (422), then commits the
``SwarmDeployment`` and starts ``RolloutWorkflow`` ``rollout-<id>``. The workflow owns the row
from then on. ``promote|abort|pause|resume`` execute the workflow's Updates; a refusal answers
409 with the workflow's reason. ``rollback`` is a rolling deployment to a stored revision.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.rollouts import cluster_target
from adapters.docker_engine import classify, docker_client
from adapters.engine_access import ACCOUNT_LABEL, engine_shared
from adapters.temporal import TemporalGateway
from api import errors, idempotency
from api.deployment_schemas import (
    DeploymentControl,
    DeploymentControlPublic,
    DeploymentCreate,
    DeploymentEventPublic,
    DeploymentEventsPublic,
    DeploymentPublic,
    DeploymentsPublic,
    RollbackRequest,
    rollout_problems,
)
from api.deps import CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from db.models import ServiceRevision, SwarmCluster, SwarmDeployment, SwarmEvent
from domain.errors import UpstreamFailed
from domain.statuses import FINISHED_DEPLOYMENT, DeploymentStatus
from services.container_specs import require_public_registry
from settings import Settings
from workflows.rollout import RolloutControl, RolloutInput, RolloutWorkflow, rollout_workflow_id

router = APIRouter(prefix="/swarm/deployments", tags=["swarm deployments"])

# Creating a rollout asks the cluster's engine whether the service and image exist.
ENGINE_RESPONSES: dict[int | str, dict[str, Any]] = {
    502: {"description": "the cluster's engine could not be reached or refused the request"}}
ACTIONS = {"promote": RolloutWorkflow.promote, "abort": RolloutWorkflow.abort, "pause": RolloutWorkflow.pause,
           "resume": RolloutWorkflow.resume}


def _cluster(session: Session, account_id: int, cluster_id: int) -> SwarmCluster:
    cluster = session.get(SwarmCluster, cluster_id)
    if cluster is None or cluster.account_id != account_id:
        raise errors.not_found("cluster")
    return cluster


def _deployment(session: Session, account_id: int, deployment_id: int) -> SwarmDeployment:
    row = session.get(SwarmDeployment, deployment_id)
    if row is None or row.account_id != account_id:
        raise errors.not_found("deployment")
    return row


def _public(session: Session, row: SwarmDeployment, live: dict[str, Any] | None = None) -> DeploymentPublic:
    revision = session.get(ServiceRevision, row.revision_id) if row.revision_id else None
    previous = session.get(ServiceRevision, row.previous_revision_id) if row.previous_revision_id else None
    state = live if live is not None else dict(row.state or {})
    return DeploymentPublic(
        id=row.id, cluster_id=row.cluster_id, service=row.service_name, strategy=row.strategy,
        status=state.get("status", row.status) if live is not None else row.status,
        revision=revision.number if revision else None, previous_revision=previous.number if previous else None,
        image=revision.image if revision else (row.config or {}).get("image"),
        image_digest=revision.image_digest if revision else None, config=dict(row.config or {}), state=state,
        # live: the workflow's own word (its status may be ahead of the row it is about to write)
        current_step=row.current_step, error=(state.get("error") if live is not None else None) or row.error,
        workflow_id=row.workflow_id,
        pipeline_run_id=row.pipeline_run_id, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, live=live is not None)


def _check_on_cluster(cluster: SwarmCluster, settings: Settings, service: str, image: str | None,
                      owner: int | None = None) -> None:
    """422 naming ``service`` / ``image`` when the cluster does not have them; 502 when unreachable.
    ``owner``: the engine is shared, and only a service labelled with this account exists for it."""
    import docker

    target = cluster_target(cluster, settings)
    try:
        with docker_client(target) as client:
            try:
                found = client.services.get(service)
                labels = (found.attrs.get("Spec") or {}).get("Labels") or {}
                if owner is not None and labels.get(ACCOUNT_LABEL) != str(owner):
                    raise docker.errors.NotFound(f"service {service} not found")
            except docker.errors.NotFound:
                raise errors.field_error(["service"], f"service {service!r} does not exist on cluster "
                                                      f"{cluster.name}; a rollout changes an existing service") from None
            if image is not None:
                try:
                    client.images.get(image)
                except docker.errors.ImageNotFound:
                    raise errors.field_error(["image"], f"image {image!r} is not on the swarm manager of "
                                                        f"{cluster.name}; push or build it there first") from None
    except (docker.errors.DockerException, OSError) as exc:
        problem = classify(exc, target.endpoint)
        if problem is None:
            raise
        raise UpstreamFailed(problem.message) from None


def _start(temporal: TemporalGateway, row: SwarmDeployment) -> None:
    temporal.call(temporal.start, RolloutWorkflow.run, RolloutInput(deployment_id=row.id, account_id=row.account_id),
                  id=rollout_workflow_id(row.id), static_summary=f"{row.strategy} rollout of {row.service_name}")


def _refuse_concurrent(session: Session, cluster_id: int, service: str) -> None:
    running = session.scalar(select(SwarmDeployment.id).where(
        SwarmDeployment.cluster_id == cluster_id, SwarmDeployment.service_name == service,
        SwarmDeployment.status.not_in(FINISHED_DEPLOYMENT)))
    if running is not None:
        raise errors.conflict(f"deployment {running} of {service} is still running: promote, abort or wait for it")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic, responses=ENGINE_RESPONSES)
def create_deployment(body: DeploymentCreate, caller: WriterCaller, session: SessionDep,
                            settings: SettingsDep, temporal: TemporalDep, request: Request, response: Response,
                            idempotency_key: idempotency.KeyHeader = None) -> DeploymentPublic:
    """Start a rollout of ``image`` to ``service`` with ``strategy`` (rolling, canary, blue_green).
    With an ``Idempotency-Key`` the same request again within 24 h answers the first deployment
    (before the one-rollout-per-service check, which it would otherwise fail), never a second one."""
    idem = idempotency.for_request(session, request, idempotency_key, account_id=caller.account_id,
                                   scope="deployments.create", resource_type="swarm_deployment",
                                   body=body.model_dump(mode="json", exclude_unset=True))

    def render(deployment_id: int) -> DeploymentPublic:
        return _public(session, _deployment(session, caller.account_id, deployment_id))

    if idem is not None and (found := idem.existing()) is not None:
        return idempotency.replay(response, found, render)
    problems = rollout_problems(body.strategy, body.steps, body.blue_green, body.rolling)
    if problems:
        raise errors.unprocessable([{"loc": ["body", *loc], "msg": msg, "type": "value_error"} for loc, msg in problems])
    require_public_registry(body.image, settings.private_targets_allowed, ["image"])
    cluster = _cluster(session, caller.account_id, body.cluster_id)
    owner = caller.account_id if engine_shared(session, settings, caller.account_id, cluster.endpoint) else None
    _check_on_cluster(cluster, settings, body.service, body.image, owner)
    # A same-key request that finished while the cluster was asked answers that deployment; a
    # concurrent one (another thread or API process) waits on the key row.
    if idem is not None and (found := idem.existing()) is not None:
        return idempotency.replay(response, found, render)
    if idem is not None and not idem.claim():  # a concurrent request with this key won
        return idempotency.replay(response, idem.wait_existing(), render)
    _refuse_concurrent(session, cluster.id, body.service)
    config = {"image": body.image, "strategy": body.strategy, "steps": body.steps or [], "env": body.env or {}}
    for name in ("blue_green", "rolling", "progress_deadline_seconds"):
        if getattr(body, name) is not None:
            config[name] = getattr(body, name)
    row = SwarmDeployment(account_id=caller.account_id, cluster_id=cluster.id, service_name=body.service,
                          strategy=body.strategy, config=config, created_by_user_id=caller.user_id)
    session.add(row)
    session.flush()
    row.workflow_id = rollout_workflow_id(row.id)
    if idem is not None:
        idem.attach(row.id)
    session.commit()
    _start(temporal, row)
    return _public(session, row)


@router.get("", response_model=DeploymentsPublic)
def list_deployments(caller: CurrentCaller, session: SessionDep, cluster_id: int | None = None,
                     service: str | None = None,
                     status_: Annotated[str | None, Query(alias="status", description=", ".join(DeploymentStatus))] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> DeploymentsPublic:
    """Newest first; ``count`` is the number of matching deployments, ``data`` the newest ``limit``."""
    query = select(SwarmDeployment).where(SwarmDeployment.account_id == caller.account_id)
    if cluster_id is not None:
        query = query.where(SwarmDeployment.cluster_id == cluster_id)
    if service:
        query = query.where(SwarmDeployment.service_name == service)
    if status_:
        query = query.where(SwarmDeployment.status == status_)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(session.scalars(query.order_by(SwarmDeployment.id.desc()).limit(limit)))
    return DeploymentsPublic(data=[_public(session, row) for row in rows], count=count)


@router.get("/{deployment_id}", response_model=DeploymentPublic)
def show_deployment(deployment_id: int, caller: CurrentCaller, session: SessionDep,
                    temporal: TemporalDep) -> DeploymentPublic:
    """The deployment, with the workflow's live state while it runs."""
    row = _deployment(session, caller.account_id, deployment_id)
    live = None
    if row.status not in FINISHED_DEPLOYMENT and row.workflow_id:
        try:
            live = temporal.call(temporal.query, row.workflow_id, RolloutWorkflow.state)
        except RPCError:
            live = None  # not started yet, or Temporal is away: the stored state answers
    return _public(session, row, live)


def _control(action: str, deployment_id: int, body: DeploymentControl | None, caller: WriterCaller,
             session: Session, temporal: TemporalGateway) -> DeploymentControlPublic:
    row = _deployment(session, caller.account_id, deployment_id)
    if row.status in FINISHED_DEPLOYMENT:
        raise errors.conflict(f"{action} refused: the rollout has already ended ({row.status})")
    workflow_id = row.workflow_id or rollout_workflow_id(row.id)
    session.close()  # no connection held while the workflow answers
    request = RolloutControl(full=body.full if body else False, reason=body.reason if body else "")
    try:
        result = temporal.call(temporal.update, workflow_id, ACTIONS[action], request)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            raise errors.conflict(f"{action} refused: {cause.message}") from None
        raise
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise errors.conflict(f"{action} refused: the rollout is no longer running") from None
        raise
    return DeploymentControlPublic(deployment_id=deployment_id, action=action, status=result.status,
                                   message=result.message)


@router.post("/{deployment_id}/promote", response_model=DeploymentControlPublic)
def promote_deployment(deployment_id: int, caller: WriterCaller, session: SessionDep, temporal: TemporalDep,
                       body: DeploymentControl | None = None) -> DeploymentControlPublic:
    """Go on past the current pause (``full``: past every remaining step); 409 when not paused."""
    return _control("promote", deployment_id, body, caller, session, temporal)


@router.post("/{deployment_id}/abort", response_model=DeploymentControlPublic)
def abort_deployment(deployment_id: int, caller: WriterCaller, session: SessionDep, temporal: TemporalDep,
                     body: DeploymentControl | None = None) -> DeploymentControlPublic:
    """Stop the rollout and remove the new revision's service; the stable service stays as it is."""
    return _control("abort", deployment_id, body, caller, session, temporal)


@router.post("/{deployment_id}/pause", response_model=DeploymentControlPublic)
def pause_deployment(deployment_id: int, caller: WriterCaller, session: SessionDep, temporal: TemporalDep,
                     body: DeploymentControl | None = None) -> DeploymentControlPublic:
    return _control("pause", deployment_id, body, caller, session, temporal)


@router.post("/{deployment_id}/resume", response_model=DeploymentControlPublic)
def resume_deployment(deployment_id: int, caller: WriterCaller, session: SessionDep, temporal: TemporalDep,
                      body: DeploymentControl | None = None) -> DeploymentControlPublic:
    return _control("resume", deployment_id, body, caller, session, temporal)


@router.get("/{deployment_id}/events", response_model=DeploymentEventsPublic)
def list_deployment_events(deployment_id: int, caller: CurrentCaller, session: SessionDep) -> DeploymentEventsPublic:
    row = _deployment(session, caller.account_id, deployment_id)
    events = list(session.scalars(select(SwarmEvent).where(SwarmEvent.deployment_id == row.id,
                                                           SwarmEvent.account_id == caller.account_id)
                                  .order_by(SwarmEvent.id)))
    data = [DeploymentEventPublic(id=e.id, event_type=e.event_type, result=e.result, payload=e.payload or {},
                                  created_at=e.created_at) for e in events]
    return DeploymentEventsPublic(data=data, count=len(data))


@router.post("/{deployment_id}/rollback", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic,
             responses=ENGINE_RESPONSES)
def rollback_deployment(deployment_id: int, body: RollbackRequest, caller: WriterCaller, session: SessionDep,
                        settings: SettingsDep, temporal: TemporalDep) -> DeploymentPublic:
    """A rolling update of the deployment's service to any stored revision (a new deployment)."""
    source = _deployment(session, caller.account_id, deployment_id)
    problems = rollout_problems("rolling", None, None, body.rolling)
    if problems:
        raise errors.unprocessable([{"loc": ["body", *loc], "msg": msg, "type": "value_error"} for loc, msg in problems])
    revision = session.scalar(select(ServiceRevision).where(
        ServiceRevision.cluster_id == source.cluster_id, ServiceRevision.service_name == source.service_name,
        ServiceRevision.number == body.revision_number, ServiceRevision.account_id == caller.account_id))
    if revision is None:
        raise errors.field_error(["revision_number"], f"{source.service_name} has no revision {body.revision_number}")
    cluster = _cluster(session, caller.account_id, source.cluster_id)
    owner = caller.account_id if engine_shared(session, settings, caller.account_id, cluster.endpoint) else None
    _check_on_cluster(cluster, settings, source.service_name, None, owner)
    _refuse_concurrent(session, cluster.id, source.service_name)
    config: dict[str, Any] = {"image": revision.image, "strategy": "rolling", "steps": [], "env": {},
                              "rollback_to": revision.number, "rollback_from_deployment": source.id}
    if body.rolling is not None:
        config["rolling"] = body.rolling
    row = SwarmDeployment(account_id=caller.account_id, cluster_id=cluster.id, service_name=source.service_name,
                          strategy="rolling", config=config, revision_id=revision.id,
                          created_by_user_id=caller.user_id)
    session.add(row)
    session.flush()
    row.workflow_id = rollout_workflow_id(row.id)
    session.commit()
    _start(temporal, row)
    return _public(session, row)
