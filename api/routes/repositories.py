"""Git repositories (the seed's ``Devops::GitRepository``): inventory, branch filters, our webhook,
pipeline links, statistics and stored webhook deliveries.

Anything that talks to a provider runs as a short Temporal workflow the route starts and awaits
(``repository-sync-<credential_id>``, ``repository-webhook-<repository_id>``), so rate limits and
outages are retried by Temporal; an answer that takes longer than the wait is 202 with the
workflow id. Provider failures answer 502 with a reason built from the error's type and status
(never the token); an archived repository's webhook is 409. A webhook's secret is never returned.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from activities.repositories import REPOSITORY_ARCHIVED, WEBHOOK_URL_UNKNOWN, webhook_url
from adapters.temporal import TemporalGateway
from api import errors
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.repository_schemas import (
    PipelineLinkPublic,
    PipelineLinksPublic,
    RepositoriesPublic,
    RepositoryCreate,
    RepositoryPublic,
    RepositoryStatsPublic,
    RepositorySyncPublic,
    RepositorySyncRequest,
    RepositoryUpdate,
    RepositoryWebhookPublic,
    WebhookEventDetailPublic,
    WebhookEventPublic,
    WebhookEventsPublic,
)
from db.models import (
    GitProvider,
    GitProviderCredential,
    GitRepository,
    GitWebhookEvent,
    Pipeline,
    PipelineRepository,
    PipelineRun,
)
from domain.webhooks.matching import validate_branch_filter
from settings import Settings
from workflows.repository_sync import (
    RepositorySyncInput,
    RepositorySyncWorkflow,
    RepositoryWebhookChange,
    RepositoryWebhookWorkflow,
    sync_workflow_id,
    webhook_workflow_id,
)

router = APIRouter(prefix="/repositories", tags=["repositories"])

#: How long a route waits for its workflow before answering 202 with the workflow id.
WAIT_SECONDS = 60.0
WORKFLOW_RUN_TIMEOUT = timedelta(minutes=20)
# ApplicationError types that are about our own state rather than the provider's answer
_CONFLICT_TYPES = {REPOSITORY_ARCHIVED: status.HTTP_409_CONFLICT, WEBHOOK_URL_UNKNOWN: status.HTTP_409_CONFLICT}


# ---- reading and shaping rows ----------------------------------------------------------------


def _public(row: GitRepository, provider_type: str, settings: Settings) -> RepositoryPublic:
    configured = row.webhook_id is not None
    return RepositoryPublic(
        id=row.id, provider_id=row.provider_id, provider_type=provider_type, credential_id=row.credential_id,
        full_name=row.full_name, default_branch=row.default_branch, language=row.language,
        topics=list(row.topics or []), visibility=row.visibility, is_fork=row.is_fork, is_archived=row.is_archived,
        clone_url=row.clone_url, html_url=row.html_url, branch_filter_type=row.branch_filter_type,
        branch_filter=row.branch_filter,
        webhook=RepositoryWebhookPublic(
            configured=configured, id=row.webhook_id,
            url=webhook_url(settings, provider_type, row.id) if configured else None,
            events=list(row.webhook_events or []), configured_at=row.webhook_configured_at,
            rejected_deliveries=row.webhook_rejected_count or 0, last_delivery_at=row.last_delivery_at),
        last_synced_at=row.last_synced_at, removed=row.removed_at is not None, removed_at=row.removed_at,
        created_at=row.created_at, updated_at=row.updated_at,
    )


def _owned(session: Session, caller: Caller, repository_id: int) -> tuple[GitRepository, str]:
    found = session.execute(
        select(GitRepository, GitProvider.provider_type)
        .join(GitProvider, GitProvider.id == GitRepository.provider_id)
        .where(GitRepository.id == repository_id, GitRepository.account_id == caller.account_id)
    ).first()
    if found is None:
        raise errors.not_found("repository")
    return found[0], found[1]


def _show(session: Session, caller: Caller, settings: Settings, repository_id: int) -> RepositoryPublic:
    row, provider_type = _owned(session, caller, repository_id)
    return _public(row, provider_type, settings)


def _credential_of_provider(session: Session, caller: Caller, provider_id: int, credential_id: int,
                            loc: list[Any]) -> GitProviderCredential:
    credential = session.scalar(select(GitProviderCredential).where(
        GitProviderCredential.id == credential_id, GitProviderCredential.account_id == caller.account_id))
    if credential is None:
        raise errors.field_error(loc, f"credential {credential_id} not found in this account", "not_found")
    if credential.provider_id != provider_id:
        raise errors.field_error(loc, f"credential {credential_id} belongs to provider {credential.provider_id}, "
                                      f"not to the repository's provider {provider_id}", "wrong_provider")
    return credential


def _credential_for(session: Session, caller: Caller, row: GitRepository) -> int:
    """The credential that reaches the repository (its own, else the provider's newest), or 409."""
    credential_id = row.credential_id or session.scalar(
        select(GitProviderCredential.id).where(GitProviderCredential.provider_id == row.provider_id,
                                               GitProviderCredential.account_id == caller.account_id)
        .order_by(GitProviderCredential.id.desc()).limit(1))
    if credential_id is None:
        raise errors.conflict(f"repository {row.full_name} has no credential to reach its provider; add one under "
                              f"/providers/{row.provider_id}/credentials")
    return credential_id


# ---- Temporal ----------------------------------------------------------------------------------


def _application_error(exc: BaseException) -> ApplicationError | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return None


async def _run(temporal: TemporalGateway, settings: Settings, workflow_run: Any, arg: Any, workflow_id: str, what: str,
               conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.FAIL) -> tuple[bool, Any]:
    """Start (or join) the workflow and wait for it: (True, result), or (False, None) still running."""
    try:
        client = await temporal.client()
        handle = await client.start_workflow(workflow_run, arg, id=workflow_id, task_queue=settings.task_queue,
                                             id_conflict_policy=conflict_policy, execution_timeout=WORKFLOW_RUN_TIMEOUT)
    except WorkflowAlreadyStartedError:
        raise errors.conflict(f"{what} is already in progress (workflow {workflow_id}); retry when it has finished") \
            from None
    except RPCError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"Temporal is unavailable; {what} was not started") from None
    try:
        return True, await asyncio.wait_for(handle.result(), WAIT_SECONDS)
    except TimeoutError:
        return False, None
    except WorkflowFailureError as exc:
        cause = _application_error(exc)
        if cause is None:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{what} did not finish: {exc.cause}") from None
        code = _CONFLICT_TYPES.get(cause.type or "", status.HTTP_502_BAD_GATEWAY)
        raise HTTPException(code, cause.message) from None
    except RPCError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"Temporal became unavailable while waiting; {what} may still finish "
                            f"(workflow {workflow_id})") from None


async def _sync(temporal: TemporalGateway, settings: Settings, account_id: int, credential_id: int,
                provider_id: int) -> Response | RepositorySyncPublic:
    workflow_id = sync_workflow_id(credential_id)
    done, result = await _run(temporal, settings, RepositorySyncWorkflow.run,
                              RepositorySyncInput(account_id=account_id, credential_id=credential_id), workflow_id,
                              f"the repository sync of credential {credential_id}",
                              conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    answer = RepositorySyncPublic(status="completed" if done else "running", workflow_id=workflow_id,
                                  temporal_ui_url=temporal.ui_url(workflow_id), credential_id=credential_id,
                                  provider_id=provider_id)
    if not done:
        return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    answer.created, answer.updated = result.created, result.updated
    answer.unchanged, answer.removed = result.unchanged, result.removed
    return answer


async def _change_webhook(temporal: TemporalGateway, settings: Settings, caller: Caller, repository_id: int,
                          action: str) -> bool:
    """Run the webhook workflow; False when it is still running after the wait."""
    workflow_id = webhook_workflow_id(repository_id)
    done, _ = await _run(temporal, settings, RepositoryWebhookWorkflow.run,
                         RepositoryWebhookChange(account_id=caller.account_id, repository_id=repository_id,
                                                 action=action),  # type: ignore[arg-type]
                         workflow_id, f"a webhook change of repository {repository_id}")
    return done


def _still_running(temporal: TemporalGateway, workflow_id: str) -> JSONResponse:
    return JSONResponse({"status": "running", "workflow_id": workflow_id,
                         "temporal_ui_url": temporal.ui_url(workflow_id)}, status_code=status.HTTP_202_ACCEPTED)


# ---- inventory -----------------------------------------------------------------------------------


@router.get("", response_model=RepositoriesPublic)
def list_repositories(session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                      provider_id: int | None = None, include_removed: bool = False,
                      q: str | None = Query(None, max_length=200, description="part of full_name"),
                      limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0)) -> RepositoriesPublic:
    """The account's repositories, newest first; removed ones only with ``include_removed``."""
    query = (select(GitRepository, GitProvider.provider_type)
             .join(GitProvider, GitProvider.id == GitRepository.provider_id)
             .where(GitRepository.account_id == caller.account_id))
    if provider_id is not None:
        query = query.where(GitRepository.provider_id == provider_id)
    if not include_removed:
        query = query.where(GitRepository.removed_at.is_(None))
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(GitRepository.full_name.ilike(f"%{escaped}%", escape="\\"))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(GitRepository.created_at.desc(), GitRepository.id.desc())
                           .limit(limit).offset(offset)).all()
    return RepositoriesPublic(data=[_public(row, kind, settings) for row, kind in rows], count=count)


@router.post("", response_model=RepositoryPublic, status_code=status.HTTP_201_CREATED)
def create_repository(body: RepositoryCreate, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep) -> RepositoryPublic:
    """Register one repository by name (nothing is fetched; a sync fills in the rest). 409 if known."""
    provider = session.scalar(select(GitProvider).where(GitProvider.id == body.provider_id,
                                                        GitProvider.account_id == caller.account_id))
    if provider is None:
        raise errors.field_error(["provider_id"], f"provider {body.provider_id} not found in this account",
                                 "not_found")
    if body.credential_id is not None:
        _credential_of_provider(session, caller, provider.id, body.credential_id, ["credential_id"])
    taken = select(GitRepository.id).where(GitRepository.provider_id == provider.id,
                                           GitRepository.full_name == body.full_name)
    message = f"repository {body.full_name!r} is already registered for provider {provider.id}"
    if session.scalar(taken) is not None:
        raise errors.conflict(message)
    row = GitRepository(account_id=caller.account_id, provider_id=provider.id, credential_id=body.credential_id,
                        full_name=body.full_name, default_branch=body.default_branch, topics=[], webhook_events=[])
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(message) from None
    return _public(row, provider.provider_type, settings)


@router.post("/sync", response_model=RepositorySyncPublic,
             responses={202: {"description": "still running after the wait; follow the workflow"}})
async def sync_credential(body: RepositorySyncRequest, session: SessionDep, caller: WriterCaller,
                          settings: SettingsDep, temporal: TemporalDep) -> Any:
    """Upsert every repository the credential can see (``RepositorySyncWorkflow``) and answer the counts."""
    def load() -> int:
        credential = session.scalar(select(GitProviderCredential).where(
            GitProviderCredential.id == body.credential_id, GitProviderCredential.account_id == caller.account_id))
        if credential is None:
            raise errors.field_error(["credential_id"], f"credential {body.credential_id} not found in this account",
                                     "not_found")
        provider_id = credential.provider_id
        session.rollback()
        return provider_id

    provider_id = await run_in_threadpool(load)
    return await _sync(temporal, settings, caller.account_id, body.credential_id, provider_id)


@router.get("/{repository_id}", response_model=RepositoryPublic)
def show_repository(repository_id: int, session: SessionDep, caller: CurrentCaller,
                    settings: SettingsDep) -> RepositoryPublic:
    return _show(session, caller, settings, repository_id)


@router.patch("/{repository_id}", response_model=RepositoryPublic)
def update_repository(repository_id: int, body: RepositoryUpdate, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep) -> RepositoryPublic:
    """Set the branch filter (422 naming ``branch_filter`` when its pattern is bad) or the credential."""
    row, provider_type = _owned(session, caller, repository_id)
    changes = body.model_dump(exclude_unset=True)
    filter_type = changes.get("branch_filter_type", row.branch_filter_type)
    if "branch_filter" in changes:
        pattern = changes["branch_filter"]
    else:
        pattern = None if filter_type == "none" else row.branch_filter
    try:
        validate_branch_filter(filter_type, pattern)
    except ValueError as exc:
        raise errors.field_error(["branch_filter"], str(exc)) from None
    if changes.get("credential_id") is not None:
        _credential_of_provider(session, caller, row.provider_id, changes["credential_id"], ["credential_id"])
    if "credential_id" in changes:
        row.credential_id = changes["credential_id"]
    row.branch_filter_type = filter_type
    row.branch_filter = pattern if filter_type != "none" else None
    session.commit()
    return _public(row, provider_type, settings)


@router.delete("/{repository_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_repository(repository_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                            temporal: TemporalDep,
                            force: bool = Query(False, description="delete even when our webhook cannot be "
                                                                   "removed at the provider")) -> Response:
    """Forget a repository, removing our webhook at the provider first (502 and nothing deleted if that
    fails, unless ``force``). Its pipeline links and stored deliveries go with it."""
    def load() -> str | None:
        row, _ = _owned(session, caller, repository_id)
        hook = row.webhook_id
        session.rollback()
        return hook

    if await run_in_threadpool(load) is not None:
        try:
            if not await _change_webhook(temporal, settings, caller, repository_id, "delete") and not force:
                return _still_running(temporal, webhook_workflow_id(repository_id))
        except HTTPException:
            if not force:
                raise

    def remove() -> None:
        row, _ = _owned(session, caller, repository_id)
        session.execute(delete(PipelineRepository).where(PipelineRepository.repository_id == row.id))
        session.execute(delete(GitWebhookEvent).where(GitWebhookEvent.repository_id == row.id))
        session.delete(row)
        session.commit()

    await run_in_threadpool(remove)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{repository_id}/sync", response_model=RepositorySyncPublic,
             responses={202: {"description": "still running after the wait; follow the workflow"}})
async def sync_repository(repository_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                          temporal: TemporalDep) -> Any:
    """Sync the repository's credential (every repository it sees, this one included)."""
    def load() -> tuple[int, int]:
        row, _ = _owned(session, caller, repository_id)
        credential_id = _credential_for(session, caller, row)
        provider_id = row.provider_id
        session.rollback()
        return credential_id, provider_id

    credential_id, provider_id = await run_in_threadpool(load)
    return await _sync(temporal, settings, caller.account_id, credential_id, provider_id)


# ---- webhook -------------------------------------------------------------------------------------


@router.post("/{repository_id}/webhook", response_model=RepositoryWebhookPublic,
             responses={202: {"description": "still running after the wait; follow the workflow"}})
async def configure_webhook(repository_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                            temporal: TemporalDep) -> Any:
    """Create our webhook, or repair it: update it with a fresh secret, re-create it when it was
    deleted at the provider. Archived repositories get none (409). The secret is never returned."""
    def check() -> None:
        row, _ = _owned(session, caller, repository_id)
        if row.is_archived:
            raise errors.conflict(f"repository {row.full_name} is archived: archived repositories get no webhook")
        _credential_for(session, caller, row)
        session.rollback()

    await run_in_threadpool(check)
    if not await _change_webhook(temporal, settings, caller, repository_id, "configure"):
        return _still_running(temporal, webhook_workflow_id(repository_id))
    shown = await run_in_threadpool(_show, session, caller, settings, repository_id)
    return shown.webhook


@router.delete("/{repository_id}/webhook", status_code=status.HTTP_204_NO_CONTENT,
               responses={202: {"description": "still running after the wait; follow the workflow"}})
async def delete_webhook(repository_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                         temporal: TemporalDep) -> Response:
    """Delete our webhook at the provider (already gone there is fine) and forget it."""
    def check() -> None:
        _owned(session, caller, repository_id)
        session.rollback()

    await run_in_threadpool(check)
    if not await _change_webhook(temporal, settings, caller, repository_id, "delete"):
        return _still_running(temporal, webhook_workflow_id(repository_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{repository_id}/webhook_events", response_model=WebhookEventsPublic)
def list_webhook_events(repository_id: int, session: SessionDep, caller: CurrentCaller,
                        status_filter: str | None = Query(None, alias="status", max_length=20),
                        limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> WebhookEventsPublic:
    """Accepted deliveries of this repository's webhook, newest first (headers and payload: by id)."""
    row, _ = _owned(session, caller, repository_id)
    query = select(GitWebhookEvent).where(GitWebhookEvent.repository_id == row.id,
                                          GitWebhookEvent.account_id == caller.account_id)
    if status_filter:
        query = query.where(GitWebhookEvent.status == status_filter)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(GitWebhookEvent.id.desc()).limit(limit).offset(offset)).all()
    return WebhookEventsPublic(data=[WebhookEventPublic(**_event_fields(e)) for e in rows], count=count)


@router.get("/{repository_id}/webhook_events/{event_id}", response_model=WebhookEventDetailPublic)
def show_webhook_event(repository_id: int, event_id: int, session: SessionDep,
                       caller: CurrentCaller) -> WebhookEventDetailPublic:
    row, _ = _owned(session, caller, repository_id)
    event = session.scalar(select(GitWebhookEvent).where(GitWebhookEvent.id == event_id,
                                                         GitWebhookEvent.repository_id == row.id,
                                                         GitWebhookEvent.account_id == caller.account_id))
    if event is None:
        raise errors.not_found("webhook event")
    return WebhookEventDetailPublic(**_event_fields(event), headers=dict(event.headers or {}), payload=event.payload,
                                    events=list(event.events or []), processed_at=event.processed_at)


def _event_fields(event: GitWebhookEvent) -> dict[str, Any]:
    return {"id": event.id, "delivery_id": event.delivery_id, "event_name": event.event_name,
            "status": event.status, "matched_pipeline_ids": list(event.matched_pipeline_ids or []),
            "run_ids": list(event.run_ids or []), "error": event.error, "created_at": event.created_at}


# ---- pipelines and statistics ----------------------------------------------------------------------


def _linked_pipeline_ids(caller: Caller, repository_id: int) -> Any:
    return select(PipelineRepository.pipeline_id).where(PipelineRepository.repository_id == repository_id,
                                                        PipelineRepository.account_id == caller.account_id)


@router.get("/{repository_id}/stats", response_model=RepositoryStatsPublic)
def repository_stats(repository_id: int, session: SessionDep, caller: CurrentCaller) -> RepositoryStatsPublic:
    """Run statistics over every pipeline linked to the repository."""
    row, _ = _owned(session, caller, repository_id)
    linked = _linked_pipeline_ids(caller, row.id)
    pipelines = session.scalar(select(func.count()).select_from(linked.subquery())) or 0
    grouped = session.execute(
        select(PipelineRun.status, func.count(), func.max(PipelineRun.created_at))
        .where(PipelineRun.account_id == caller.account_id, PipelineRun.pipeline_id.in_(linked))
        .group_by(PipelineRun.status)
    ).all()
    by_status = {run_status: count for run_status, count, _ in grouped}
    last: list[datetime] = [at for _, _, at in grouped if at is not None]
    decided = by_status.get("success", 0) + by_status.get("failure", 0)
    return RepositoryStatsPublic(
        repository_id=row.id, pipelines=pipelines, total_runs=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        success_rate=round(by_status.get("success", 0) / decided, 4) if decided else None,
        last_run_at=max(last) if last else None,
    )


def _link_public(link: PipelineRepository, pipeline: Pipeline) -> PipelineLinkPublic:
    return PipelineLinkPublic(repository_id=link.repository_id, pipeline_id=pipeline.id, pipeline_name=pipeline.name,
                              pipeline_slug=pipeline.slug, is_active=pipeline.is_active, created_at=link.created_at)


@router.get("/{repository_id}/pipelines", response_model=PipelineLinksPublic)
def list_pipeline_links(repository_id: int, session: SessionDep, caller: CurrentCaller) -> PipelineLinksPublic:
    """The pipelines this repository's webhook events may trigger."""
    row, _ = _owned(session, caller, repository_id)
    rows = session.execute(
        select(PipelineRepository, Pipeline).join(Pipeline, Pipeline.id == PipelineRepository.pipeline_id)
        .where(PipelineRepository.repository_id == row.id, PipelineRepository.account_id == caller.account_id,
               Pipeline.account_id == caller.account_id)
        .order_by(PipelineRepository.id)
    ).all()
    return PipelineLinksPublic(data=[_link_public(link, pipeline) for link, pipeline in rows], count=len(rows))


def _owned_pipeline(session: Session, caller: Caller, pipeline_id: int) -> Pipeline:
    pipeline = session.scalar(select(Pipeline).where(Pipeline.id == pipeline_id,
                                                     Pipeline.account_id == caller.account_id))
    if pipeline is None:
        raise errors.not_found("pipeline")
    return pipeline


@router.put("/{repository_id}/pipelines/{pipeline_id}", response_model=PipelineLinkPublic,
            responses={201: {"description": "linked"}, 200: {"description": "already linked"}})
def link_pipeline(repository_id: int, pipeline_id: int, session: SessionDep, caller: WriterCaller,
                  response: Response) -> PipelineLinkPublic:
    """Let this repository's webhook events trigger the pipeline (201; 200 when already linked)."""
    row, _ = _owned(session, caller, repository_id)
    pipeline = _owned_pipeline(session, caller, pipeline_id)
    link = session.scalar(select(PipelineRepository).where(PipelineRepository.repository_id == row.id,
                                                           PipelineRepository.pipeline_id == pipeline.id))
    if link is not None:
        response.status_code = status.HTTP_200_OK
        return _link_public(link, pipeline)
    link = PipelineRepository(account_id=caller.account_id, pipeline_id=pipeline.id, repository_id=row.id)
    session.add(link)
    try:
        session.commit()
    except IntegrityError:  # a concurrent PUT linked it first: the same outcome
        session.rollback()
        link = session.scalar(select(PipelineRepository).where(PipelineRepository.repository_id == repository_id,
                                                               PipelineRepository.pipeline_id == pipeline_id))
        if link is None:
            raise
        response.status_code = status.HTTP_200_OK
        return _link_public(link, _owned_pipeline(session, caller, pipeline_id))
    response.status_code = status.HTTP_201_CREATED
    return _link_public(link, pipeline)


@router.delete("/{repository_id}/pipelines/{pipeline_id}", status_code=status.HTTP_204_NO_CONTENT)
def unlink_pipeline(repository_id: int, pipeline_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    row, _ = _owned(session, caller, repository_id)
    pipeline = _owned_pipeline(session, caller, pipeline_id)
    link = session.scalar(select(PipelineRepository).where(PipelineRepository.repository_id == row.id,
                                                           PipelineRepository.pipeline_id == pipeline.id))
    if link is None:
        raise errors.not_found("pipeline link")
    session.delete(link)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
