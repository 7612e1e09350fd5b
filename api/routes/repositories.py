"""Git repositories (the seed's ``Devops::GitRepository``): inventory, branch filters, syncs and our
webhook (stored deliveries, pipeline links and statistics are in ``repository_links``).

Anything that talks to a provider runs as a short Temporal workflow the route starts and awaits
(``repository-sync-<credential_id>``, ``repository-webhook-<repository_id>``), so rate limits and
outages are retried by Temporal; an answer that takes longer than the wait is 202 with the
workflow id. Provider failures answer 502 with a reason built from the error's type and status
(never the token); an archived repository's webhook is 409. A webhook's secret is never returned.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from activities.repositories import REPOSITORY_ARCHIVED, WEBHOOK_URL_UNKNOWN
from adapters.temporal import TemporalGateway
from api import errors
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.repository_schemas import (
    RepositoriesPublic,
    RepositoryCreate,
    RepositoryPublic,
    RepositorySyncPublic,
    RepositorySyncRequest,
    RepositoryUpdate,
    RepositoryWebhookPublic,
)
from api.repository_views import (
    credential_for,
    credential_of_provider,
    owned_repository,
    repository_public,
    show_repository_public,
)
from db.models import (
    GitProvider,
    GitProviderCredential,
    GitRepository,
    GitWebhookEvent,
    PipelineRepository,
)
from domain.errors import Conflict, DomainError, Unavailable, UpstreamFailed
from domain.webhooks.matching import validate_branch_filter
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
# Answers of the routes that run a provider workflow, besides the ones every route documents.
PROVIDER_WORKFLOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "still running after the wait; follow the workflow"},
    502: {"description": "the provider refused or failed (the reason is built from its error type and status)"},
}
# ApplicationError types that are about our own state rather than the provider's answer
_CONFLICT_TYPES = {REPOSITORY_ARCHIVED, WEBHOOK_URL_UNKNOWN}


# ---- Temporal ----------------------------------------------------------------------------------


def _application_error(exc: BaseException) -> ApplicationError | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return None


async def _start_and_wait(temporal: TemporalGateway, workflow_run: Any, arg: Any, workflow_id: str, what: str,
                          conflict_policy: WorkflowIDConflictPolicy) -> tuple[bool, Any]:
    """Start (or join) the workflow and wait for it: (True, result), or (False, None) still running."""
    try:
        handle = await temporal.start(workflow_run, arg, id=workflow_id, id_conflict_policy=conflict_policy,
                                      execution_timeout=WORKFLOW_RUN_TIMEOUT)
    except WorkflowAlreadyStartedError:
        raise errors.conflict(f"{what} is already in progress (workflow {workflow_id}); retry when it has finished") \
            from None
    except RPCError:
        raise Unavailable(f"Temporal is unavailable; {what} was not started") from None
    try:
        return True, await asyncio.wait_for(handle.result(), WAIT_SECONDS)
    except TimeoutError:
        return False, None
    except WorkflowFailureError as exc:
        cause = _application_error(exc)
        if cause is None:
            raise UpstreamFailed(f"{what} did not finish: {exc.cause}") from None
        raise (Conflict if cause.type in _CONFLICT_TYPES else UpstreamFailed)(cause.message) from None
    except RPCError:
        raise Unavailable(f"Temporal became unavailable while waiting; {what} may still finish "
                          f"(workflow {workflow_id})") from None


def _run(temporal: TemporalGateway, workflow_run: Any, arg: Any, workflow_id: str, what: str,
         conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.FAIL) -> tuple[bool, Any]:
    """:func:`_start_and_wait` from a sync route (up to :data:`WAIT_SECONDS`; hold no session meanwhile)."""
    return temporal.call(_start_and_wait, temporal, workflow_run, arg, workflow_id, what, conflict_policy)


def _sync(temporal: TemporalGateway, account_id: int, credential_id: int,
          provider_id: int) -> Response | RepositorySyncPublic:
    workflow_id = sync_workflow_id(credential_id)
    done, result = _run(temporal, RepositorySyncWorkflow.run,
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


def _change_webhook(temporal: TemporalGateway, caller: Caller, repository_id: int, action: str) -> bool:
    """Run the webhook workflow; False when it is still running after the wait."""
    workflow_id = webhook_workflow_id(repository_id)
    done, _ = _run(temporal, RepositoryWebhookWorkflow.run,
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
                      q: Annotated[str | None, Query(max_length=200, description="part of full_name")] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100,
                      offset: Annotated[int, Query(ge=0)] = 0) -> RepositoriesPublic:
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
    return RepositoriesPublic(data=[repository_public(row, kind, settings) for row, kind in rows], count=count)


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
        credential_of_provider(session, caller, provider.id, body.credential_id, ["credential_id"])
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
    return repository_public(row, provider.provider_type, settings)


@router.post("/sync", response_model=RepositorySyncPublic,
             responses=PROVIDER_WORKFLOW_RESPONSES)
def sync_credential_repositories(body: RepositorySyncRequest, session: SessionDep, caller: WriterCaller,
                                 temporal: TemporalDep) -> Any:
    """Upsert every repository the credential can see (``RepositorySyncWorkflow``) and answer the counts."""
    credential = session.scalar(select(GitProviderCredential).where(
        GitProviderCredential.id == body.credential_id, GitProviderCredential.account_id == caller.account_id))
    if credential is None:
        raise errors.field_error(["credential_id"], f"credential {body.credential_id} not found in this account",
                                 "not_found")
    provider_id = credential.provider_id
    session.rollback()  # no connection held while the workflow runs
    return _sync(temporal, caller.account_id, body.credential_id, provider_id)


@router.get("/{repository_id}", response_model=RepositoryPublic)
def show_repository(repository_id: int, session: SessionDep, caller: CurrentCaller,
                    settings: SettingsDep) -> RepositoryPublic:
    return show_repository_public(session, caller, settings, repository_id)


@router.patch("/{repository_id}", response_model=RepositoryPublic)
def update_repository(repository_id: int, body: RepositoryUpdate, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep) -> RepositoryPublic:
    """Set the branch filter (422 naming ``branch_filter`` when its pattern is bad) or the credential."""
    row, provider_type = owned_repository(session, caller, repository_id)
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
        credential_of_provider(session, caller, row.provider_id, changes["credential_id"], ["credential_id"])
    if "credential_id" in changes:
        row.credential_id = changes["credential_id"]
    row.branch_filter_type = filter_type
    row.branch_filter = pattern if filter_type != "none" else None
    session.commit()
    return repository_public(row, provider_type, settings)


@router.delete("/{repository_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROVIDER_WORKFLOW_RESPONSES)
def delete_repository(repository_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                      force: Annotated[bool, Query(description="delete even when our webhook cannot be "
                                                               "removed at the provider")] = False) -> Response:
    """Forget a repository, removing our webhook at the provider first (502 and nothing deleted if that
    fails, unless ``force``). Its pipeline links and stored deliveries go with it."""
    row, _ = owned_repository(session, caller, repository_id)
    hook = row.webhook_id
    session.rollback()  # no connection held while the workflow runs
    if hook is not None:
        try:
            if not _change_webhook(temporal, caller, repository_id, "delete") and not force:
                return _still_running(temporal, webhook_workflow_id(repository_id))
        except DomainError:
            if not force:
                raise
    row, _ = owned_repository(session, caller, repository_id)
    session.execute(delete(PipelineRepository).where(PipelineRepository.repository_id == row.id))
    session.execute(delete(GitWebhookEvent).where(GitWebhookEvent.repository_id == row.id))
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{repository_id}/sync", response_model=RepositorySyncPublic,
             responses=PROVIDER_WORKFLOW_RESPONSES)
def sync_repository(repository_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Any:
    """Sync the repository's credential (every repository it sees, this one included)."""
    row, _ = owned_repository(session, caller, repository_id)
    credential_id = credential_for(session, caller, row)
    provider_id = row.provider_id
    session.rollback()  # no connection held while the workflow runs
    return _sync(temporal, caller.account_id, credential_id, provider_id)


# ---- webhook -------------------------------------------------------------------------------------


@router.post("/{repository_id}/webhook", response_model=RepositoryWebhookPublic,
             responses=PROVIDER_WORKFLOW_RESPONSES)
def configure_repository_webhook(repository_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                                 temporal: TemporalDep) -> Any:
    """Create our webhook, or repair it: update it with a fresh secret, re-create it when it was
    deleted at the provider. Archived repositories get none (409). The secret is never returned."""
    row, _ = owned_repository(session, caller, repository_id)
    if row.is_archived:
        raise errors.conflict(f"repository {row.full_name} is archived: archived repositories get no webhook")
    credential_for(session, caller, row)
    session.rollback()  # no connection held while the workflow runs
    if not _change_webhook(temporal, caller, repository_id, "configure"):
        return _still_running(temporal, webhook_workflow_id(repository_id))
    return show_repository_public(session, caller, settings, repository_id).webhook


@router.delete("/{repository_id}/webhook", status_code=status.HTTP_204_NO_CONTENT,
               responses=PROVIDER_WORKFLOW_RESPONSES)
def delete_repository_webhook(repository_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Response:
    """Delete our webhook at the provider (already gone there is fine) and forget it."""
    owned_repository(session, caller, repository_id)
    session.rollback()  # no connection held while the workflow runs
    if not _change_webhook(temporal, caller, repository_id, "delete"):
        return _still_running(temporal, webhook_workflow_id(repository_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
