"""The credential side of git access for steps: which repository a private ``checkout`` clones
and with what token, and the maskers that keep that token out of logs and outputs.

Shared by ``activities.steps`` (``checkout``) and ``activities.git_steps`` (the provider steps
and commit statuses); it depends on neither, so the step modules form no cycle. The token never
leaves the activity: git gets it only through its environment (``http.extraHeader``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from activities.step_contract import StepInput, step_failed
from adapters.git_providers.base import ProviderError
from adapters.git_providers.credentials import access_for_repository
from domain.masking import Masker
from settings import Settings

# The user name git sends with the token (HTTP Basic), per provider.
GIT_HTTP_USERS = {"github": "x-access-token", "gitea": "x-access-token", "gitlab": "oauth2",
                  "bitbucket": "x-token-auth"}


def git_http_user(provider_type: str) -> str:
    return GIT_HTTP_USERS.get(provider_type, "x-access-token")


def token_masker(token: str, user: str) -> Masker:
    """Masks the token and the ``user:token`` pair git sends."""
    return Masker([token, f"{user}:{token}"])


class ChainedMasker(Masker):
    """A step's secrets masker plus the provider token's."""

    def __init__(self, *maskers: Masker) -> None:
        super().__init__()
        self._maskers = [m for m in maskers if m]

    def __bool__(self) -> bool:
        return bool(self._maskers)

    def mask(self, text: str) -> str:
        for masker in self._maskers:
            text = masker.mask(text)
        return text


@dataclass
class CheckoutSource:
    """A GitRepository to clone with its credential: the token travels only in ``env``."""

    url: str
    ref: str
    full_name: str
    env: dict[str, str]
    masker: Masker
    hint: str

    def mask_with(self, masker: Masker) -> Masker:
        return ChainedMasker(self.masker, masker)


def checkout_source(settings: Settings, sessions: sessionmaker[Session], inp: StepInput,
                    params: dict[str, Any]) -> CheckoutSource | None:
    """The repository ``checkout`` clones through a provider credential, or None for a plain
    ``with.repository`` URL. Blocking (database, OAuth refresh): run it in a thread."""
    repository_id = params.get("repository_id")
    if repository_id is not None and params.get("repository"):
        raise step_failed("checkout takes `with.repository` (a git URL) or `with.repository_id`, not both")
    if repository_id is None:
        if params.get("repository") or inp.trigger_repository_id is None:
            return None
        repository_id = inp.trigger_repository_id
    repository_id = repository_id_param(repository_id)
    with sessions.begin() as session:
        try:
            access, repository = access_for_repository(session, settings, inp.account_id, repository_id)
        except ProviderError as exc:
            raise step_failed(f"checkout: {exc.message}") from None
        access.close()  # only the token is needed: git talks to the server itself
        user = git_http_user(access.provider.provider_type)
        basic = base64.b64encode(f"{user}:{access.token}".encode()).decode()
        env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
               "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}
        if repository.id == inp.trigger_repository_id and inp.trigger_sha:
            ref = inp.trigger_sha
        else:
            ref = repository.default_branch or "HEAD"
        hint = (f"the repository {repository.full_name} was fetched with the token of credential "
                f"'{access.credential.name}'; if it is wrong, expired or cannot read the repository, update it "
                f"under /providers/{access.provider.id}/credentials")
        if not repository.clone_url:
            raise step_failed(f"repository {repository.full_name} has no clone URL; sync its provider first")
        return CheckoutSource(url=repository.clone_url, ref=ref, full_name=repository.full_name, env=env,
                              masker=token_masker(access.token, user), hint=hint)


def repository_id_param(value: Any) -> int:
    """``with.repository_id`` as an id, or the step fails saying what it must be."""
    if isinstance(value, bool):
        raise step_failed("`with.repository_id` must be the id of a repository of this account")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise step_failed("`with.repository_id` must be the id of a repository of this account") from None
