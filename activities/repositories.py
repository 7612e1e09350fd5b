"""Activities behind repository inventory and our webhooks (the seed's ``Devops::GitRepository``).

:meth:`RepositoryActivities.sync_repositories` upserts every repository a credential can see and
marks the ones it no longer lists as removed; :meth:`~RepositoryActivities.configure_webhook`
creates or repairs our webhook on one repository with a fresh secret, and
:meth:`~RepositoryActivities.delete_webhook` takes it away. All three are idempotent (activities
run at least once): the sync is an upsert keyed by (provider, full name), a configure that finds
its hook gone creates a new one, and a delete that finds nothing at the provider is done.

Provider failures become ``ApplicationError`` whose ``type`` is the provider error's class name
(``AuthError``, ``NotFound``, ``RateLimited`` ...) and that is retryable only for rate limits and
outages. Their messages are built from the error's type and HTTP status, never from a library's
text (which may echo the request), and the token is masked all the same.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.git_providers.base import (
    AuthError,
    NotFound,
    ProviderDown,
    ProviderError,
    RateLimited,
    Repository,
)
from adapters.git_providers.credentials import (
    ProviderAccess,
    access_for_credential,
    access_for_repository,
    repository_of,
    secret_box,
)
from db.models import GitRepository
from settings import Settings

#: What our webhook asks for, in the provider-neutral vocabulary; each client delivers a subset.
WANTED_WEBHOOK_EVENTS = ("push", "tag_push", "pull_request", "issues", "issue_comment", "release")
WEBHOOK_PATH = "/api/v1/devops/webhooks/{provider_type}/{repository_id}"

# ApplicationError types of our own (provider failures use the provider error's class name)
REPOSITORY_ARCHIVED = "RepositoryArchived"
WEBHOOK_URL_UNKNOWN = "WebhookUrlUnknown"

#: Compared to decide whether a synced repository changed (and only then is it written).
SYNCED_FIELDS = ("default_branch", "language", "topics", "visibility", "is_fork", "is_archived", "clone_url",
                 "html_url", "credential_id")


@dataclass
class SyncRepositoriesInput:
    account_id: int
    credential_id: int


@dataclass
class SyncRepositoriesResult:
    provider_id: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


@dataclass
class RepositoryWebhookInput:
    account_id: int
    repository_id: int


@dataclass
class RepositoryWebhookResult:
    repository_id: int
    webhook_id: str | None = None
    url: str | None = None
    events: list[str] = field(default_factory=list)
    configured_at: str | None = None  # ISO 8601
    created: bool = False  # False: an existing hook was updated (or, for a delete, nothing was there)


def webhook_url(settings: Settings, provider_type: str, repository_id: int) -> str:
    """Where a provider delivers this repository's events (``settings.public_api_url`` based)."""
    return settings.public_api_url.rstrip("/") + WEBHOOK_PATH.format(provider_type=provider_type,
                                                                      repository_id=repository_id)


def explain(exc: ProviderError, doing: str) -> str:
    """A user-facing reason built from the error's type and status (our own texts when no status)."""
    provider = exc.provider or "the provider"
    http = f" (HTTP {exc.status})" if exc.status else ""
    if isinstance(exc, AuthError):
        return (f"{provider} refused the credential{http} while {doing}: the token is wrong, expired, "
                "revoked or lacks the scope for this")
    if isinstance(exc, RateLimited):
        wait = f"; retry after {exc.retry_after:.0f} s" if exc.retry_after is not None else ""
        return f"{provider} rate-limited the request while {doing}{wait}"
    if isinstance(exc, ProviderDown):
        return f"{provider} is unavailable{http} while {doing}"
    if exc.status is None:  # raised by our own code (a missing credential, an unsupported event)
        return f"{exc.message} (while {doing})"
    if isinstance(exc, NotFound):
        return f"{provider} answered not found{http} while {doing}: the repository is gone or hidden from the token"
    return f"{provider} answered an error{http} while {doing}"


@contextmanager
def provider_errors(doing: str, token: str = "") -> Iterator[None]:
    """Re-raise a provider failure as the ``ApplicationError`` Temporal's retry policy reads."""
    try:
        yield
    except ProviderError as exc:
        message = explain(exc, doing)
        if token:
            message = message.replace(token, "***")
        delay = None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = timedelta(seconds=max(1.0, exc.retry_after))
        raise ApplicationError(message, type=type(exc).__name__, non_retryable=not exc.retryable,
                               next_retry_delay=delay) from None


def _synced_values(repo: Repository, credential_id: int) -> dict[str, Any]:
    return {
        "default_branch": repo.default_branch or "main",
        "language": repo.language or None,
        "topics": sorted(repo.topics),
        "visibility": "private" if repo.private else "public",
        "is_fork": repo.fork,
        "is_archived": repo.archived,
        "clone_url": repo.clone_url or "",
        "html_url": repo.html_url or "",
        "credential_id": credential_id,
    }


class RepositoryActivities:
    """Settings and the session factory are injected; provider clients are built per call from the
    stored credential (``adapters.git_providers.credentials``) and closed before returning."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = session_factory

    # ---- inventory ---------------------------------------------------------------------------

    @activity.defn(name="sync_repositories")
    async def sync_repositories(self, inp: SyncRepositoriesInput) -> SyncRepositoriesResult:
        """Upsert every repository the credential lists; mark this credential's others removed."""
        return await asyncio.to_thread(self._sync, inp)

    def _sync(self, inp: SyncRepositoriesInput) -> SyncRepositoriesResult:
        with self._sessions() as session:
            with provider_errors("loading the credential"):
                access = access_for_credential(session, self._settings, inp.account_id, inp.credential_id)
            provider_id = access.provider.id
            session.commit()  # an OAuth refresh is kept; no transaction stays open during the call
            try:
                with provider_errors(f"listing the repositories of credential {inp.credential_id}", access.token):
                    listed = access.client.list_repositories()
            finally:
                access.close()
            return self._upsert(session, inp, provider_id, listed)

    def _upsert(self, session: Session, inp: SyncRepositoriesInput, provider_id: int,
                listed: list[Repository]) -> SyncRepositoriesResult:
        now = datetime.now(UTC)
        result = SyncRepositoriesResult(provider_id=provider_id)
        existing = {row.full_name: row for row in session.scalars(
            select(GitRepository).where(GitRepository.provider_id == provider_id,
                                        GitRepository.account_id == inp.account_id))}
        seen: set[str] = set()
        for repo in listed:
            if repo.full_name in seen:  # a provider listing one repository twice (pagination overlap)
                continue
            seen.add(repo.full_name)
            values = _synced_values(repo, inp.credential_id)
            row = existing.get(repo.full_name)
            if row is None:
                session.add(GitRepository(account_id=inp.account_id, provider_id=provider_id,
                                          full_name=repo.full_name, last_synced_at=now, **values))
                result.created += 1
                continue
            current = {name: getattr(row, name) for name in SYNCED_FIELDS}
            current["topics"] = sorted(current["topics"] or [])
            if current == values and row.removed_at is None:
                result.unchanged += 1  # not rewritten: its updated_at keeps telling when it last changed
                continue
            for name, value in values.items():
                setattr(row, name, value)
            row.removed_at = None
            row.last_synced_at = now
            result.updated += 1
        for name, row in existing.items():
            if name not in seen and row.credential_id == inp.credential_id and row.removed_at is None:
                row.removed_at = now
                row.last_synced_at = now
                result.removed += 1
        session.commit()
        activity.logger.info("credential %s synced: %s", inp.credential_id, result)
        return result

    # ---- webhooks ----------------------------------------------------------------------------

    @activity.defn(name="configure_repository_webhook")
    async def configure_webhook(self, inp: RepositoryWebhookInput) -> RepositoryWebhookResult:
        """Create our webhook, or repair it (update with a fresh secret; re-create if it is gone)."""
        return await asyncio.to_thread(self._configure, inp)

    def _configure(self, inp: RepositoryWebhookInput) -> RepositoryWebhookResult:
        with self._sessions() as session:
            with provider_errors("loading the repository"):
                repository = repository_of(session, inp.account_id, inp.repository_id)
            if repository.is_archived:
                raise ApplicationError(
                    f"repository {repository.full_name} is archived: archived repositories get no webhook "
                    "(unarchive it at the provider and sync first)", type=REPOSITORY_ARCHIVED, non_retryable=True)
            if not self._settings.public_api_url:
                raise ApplicationError(
                    "the API's public URL is not configured, so providers would not know where to deliver; "
                    "set DEVOPS_PUBLIC_API_URL", type=WEBHOOK_URL_UNKNOWN, non_retryable=True)
            with provider_errors(f"loading the credential of {repository.full_name}"):
                access, repository = access_for_repository(session, self._settings, inp.account_id,
                                                           inp.repository_id)
            full_name, hook_id = repository.full_name, repository.webhook_id
            url = webhook_url(self._settings, access.provider.provider_type, repository.id)
            events = [e for e in WANTED_WEBHOOK_EVENTS if e in access.client.webhook_events]
            secret = secrets.token_urlsafe(32)
            session.commit()
            try:
                hook, created = self._create_or_update(access, full_name, hook_id, url, secret, events)
            finally:
                access.close()
            row = repository_of(session, inp.account_id, inp.repository_id)
            now = datetime.now(UTC)
            row.webhook_id = hook.id
            row.encrypted_webhook_secret = secret_box(self._settings).encrypt(secret)
            row.webhook_events = events
            row.webhook_configured_at = now
            session.commit()
            return RepositoryWebhookResult(repository_id=row.id, webhook_id=hook.id, url=url, events=events,
                                           configured_at=now.isoformat(), created=created)

    @staticmethod
    def _create_or_update(access: ProviderAccess, full_name: str, hook_id: str | None, url: str, secret: str,
                          events: list[str]) -> tuple[Any, bool]:
        client = access.client
        with provider_errors(f"configuring the webhook of {full_name}", access.token):
            if hook_id:
                try:
                    return client.update_webhook(full_name, hook_id, url, secret, events), False
                except NotFound:
                    pass  # deleted at the provider: make a new one
            return client.create_webhook(full_name, url, secret, events), True

    @activity.defn(name="delete_repository_webhook")
    async def delete_webhook(self, inp: RepositoryWebhookInput) -> RepositoryWebhookResult:
        """Delete our webhook at the provider (already gone is fine) and forget it."""
        return await asyncio.to_thread(self._delete, inp)

    def _delete(self, inp: RepositoryWebhookInput) -> RepositoryWebhookResult:
        with self._sessions() as session:
            with provider_errors("loading the repository"):
                repository = repository_of(session, inp.account_id, inp.repository_id)
            hook_id = repository.webhook_id
            if hook_id:
                with provider_errors(f"loading the credential of {repository.full_name}"):
                    access, repository = access_for_repository(session, self._settings, inp.account_id,
                                                               inp.repository_id)
                full_name = repository.full_name
                session.commit()
                try:
                    with provider_errors(f"deleting the webhook of {full_name}", access.token):
                        try:
                            access.client.delete_webhook(full_name, hook_id)
                        except NotFound:
                            pass  # deleted at the provider already: the outcome we wanted
                finally:
                    access.close()
                repository = repository_of(session, inp.account_id, inp.repository_id)
            repository.webhook_id = None
            repository.encrypted_webhook_secret = None
            repository.webhook_events = []
            repository.webhook_configured_at = None
            session.commit()
            return RepositoryWebhookResult(repository_id=repository.id, webhook_id=hook_id)
