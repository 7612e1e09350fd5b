"""Load a provider client for an account's credential or repository, inside an activity.

Workflows carry ids only; this is where a token is decrypted, used and dropped. Every lookup
filters by account, so an id from another account is "not found" like one that never existed.
An OAuth credential whose access token has expired (or is about to) is refreshed first when the
provider issued a refresh token (see ``adapters.git_providers.oauth``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.git_providers.base import GitProviderClient, NotFound, ProviderError
from adapters.git_providers.factory import client_for
from adapters.network_targets import check_host
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential, GitRepository
from domain.network_rules import url_host_port, worded_refusal
from settings import Settings


@dataclass
class ProviderAccess:
    """What an activity needs to call a provider: the client and the rows it came from."""

    client: GitProviderClient
    provider: GitProvider
    credential: GitProviderCredential
    token: str  # kept for git over HTTPS; never logged, never returned

    def close(self) -> None:
        self.client.close()


class TargetRefused(ProviderError):
    """The provider's base URL resolves to an internal address and internal targets are off."""


def refuse_internal_base_url(settings: Settings, provider: GitProvider) -> None:
    """Workers connect to ``base_url`` for any member who can trigger a sync or a git step, so an
    internal address is refused unless ``DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS`` (the API's test
    connection and the ``notify`` step follow the same rule: ``adapters.network_targets``). A name
    that does not resolve passes: the client's own connection error will say so."""
    if settings.private_targets_allowed or not provider.base_url:
        return
    host, port = url_host_port(provider.base_url)
    check = check_host(host, port, what="the base URL's", unresolvable_ok=True)
    if check.problem:
        raise TargetRefused(worded_refusal(check, lead=f"provider '{provider.name}' has a base URL whose host ",
                                           allow="providers"), provider=provider.provider_type)


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key, settings.old_secret_keys)


def credential_token(session: Session, settings: Settings, credential: GitProviderCredential,
                     provider: GitProvider) -> str:
    """The usable access token of ``credential``, refreshed first when it is an expired OAuth one."""
    if credential.auth_type == "oauth":
        from adapters.git_providers import oauth  # noqa: PLC0415 - OAuth is optional machinery

        return oauth.fresh_access_token(session, settings, credential, provider)
    return secret_box(settings).decrypt(credential.encrypted_token)


def access_for_credential(session: Session, settings: Settings, account_id: int, credential_id: int) -> ProviderAccess:
    row = session.execute(
        select(GitProviderCredential, GitProvider)
        .join(GitProvider, GitProvider.id == GitProviderCredential.provider_id)
        .where(GitProviderCredential.id == credential_id, GitProviderCredential.account_id == account_id)
    ).first()
    if row is None:
        raise NotFound(f"credential {credential_id} does not exist")
    credential, provider = row
    refuse_internal_base_url(settings, provider)
    token = credential_token(session, settings, credential, provider)
    return ProviderAccess(client_for(provider.provider_type, provider.base_url, token), provider, credential, token)


def repository_of(session: Session, account_id: int, repository_id: int) -> GitRepository:
    repository = session.scalar(select(GitRepository).where(GitRepository.id == repository_id,
                                                            GitRepository.account_id == account_id))
    if repository is None:
        raise NotFound(f"repository {repository_id} does not exist")
    return repository


def access_for_repository(session: Session, settings: Settings, account_id: int,
                          repository_id: int) -> tuple[ProviderAccess, GitRepository]:
    """The client for a repository through its credential (the provider's newest credential
    when the repository has none of its own)."""
    repository = repository_of(session, account_id, repository_id)
    credential_id = repository.credential_id
    if credential_id is None:
        credential_id = session.scalar(
            select(GitProviderCredential.id)
            .where(GitProviderCredential.provider_id == repository.provider_id,
                   GitProviderCredential.account_id == account_id)
            .order_by(GitProviderCredential.id.desc()).limit(1)
        )
        if credential_id is None:
            raise NotFound(f"repository {repository.full_name} has no credential to reach its provider; "
                           "add one under /providers/{id}/credentials")
    return access_for_credential(session, settings, account_id, credential_id), repository
