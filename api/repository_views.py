"""How a repository row is found for the caller and answered: shared by the repository routes
(inventory and webhook in ``repositories``, deliveries and pipeline links in ``repository_links``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from activities.repositories import webhook_url
from api import errors
from api.deps import Caller
from api.repository_schemas import RepositoryPublic, RepositoryWebhookPublic
from db.models import GitProvider, GitProviderCredential, GitRepository
from settings import Settings


def repository_public(row: GitRepository, provider_type: str, settings: Settings) -> RepositoryPublic:
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


def owned_repository(session: Session, caller: Caller, repository_id: int) -> tuple[GitRepository, str]:
    found = session.execute(
        select(GitRepository, GitProvider.provider_type)
        .join(GitProvider, GitProvider.id == GitRepository.provider_id)
        .where(GitRepository.id == repository_id, GitRepository.account_id == caller.account_id)
    ).first()
    if found is None:
        raise errors.not_found("repository")
    return found[0], found[1]


def show_repository_public(session: Session, caller: Caller, settings: Settings, repository_id: int) -> RepositoryPublic:
    row, provider_type = owned_repository(session, caller, repository_id)
    return repository_public(row, provider_type, settings)


def credential_of_provider(session: Session, caller: Caller, provider_id: int, credential_id: int,
                            loc: list[Any]) -> GitProviderCredential:
    credential = session.scalar(select(GitProviderCredential).where(
        GitProviderCredential.id == credential_id, GitProviderCredential.account_id == caller.account_id))
    if credential is None:
        raise errors.field_error(loc, f"credential {credential_id} not found in this account", "not_found")
    if credential.provider_id != provider_id:
        raise errors.field_error(loc, f"credential {credential_id} belongs to provider {credential.provider_id}, "
                                      f"not to the repository's provider {provider_id}", "wrong_provider")
    return credential


def credential_for(session: Session, caller: Caller, row: GitRepository) -> int:
    """The credential that reaches the repository (its own, else the provider's newest), or 409."""
    credential_id = row.credential_id or session.scalar(
        select(GitProviderCredential.id).where(GitProviderCredential.provider_id == row.provider_id,
                                               GitProviderCredential.account_id == caller.account_id)
        .order_by(GitProviderCredential.id.desc()).limit(1))
    if credential_id is None:
        raise errors.conflict(f"repository {row.full_name} has no credential to reach its provider; add one under "
                              f"/providers/{row.provider_id}/credentials")
    return credential_id
