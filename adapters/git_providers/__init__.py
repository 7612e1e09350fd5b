"""Git provider clients: one interface (``GitProviderClient``), four implementations, one error
hierarchy (see ``base``). Build one with ``client_for(provider_type, base_url, token)``."""

from adapters.git_providers.base import (
    CAPABILITIES,
    WEBHOOK_EVENTS,
    AuthError,
    Branch,
    Comment,
    Commit,
    Conflict,
    GitProviderClient,
    Issue,
    NotFound,
    ProviderDown,
    ProviderError,
    ProviderUser,
    PullRequest,
    RateLimited,
    Repository,
    UnsupportedOperation,
    Webhook,
)
from adapters.git_providers.factory import PROVIDER_TYPES, client_for

__all__ = [
    "CAPABILITIES",
    "PROVIDER_TYPES",
    "WEBHOOK_EVENTS",
    "AuthError",
    "Branch",
    "Comment",
    "Commit",
    "Conflict",
    "GitProviderClient",
    "Issue",
    "NotFound",
    "ProviderDown",
    "ProviderError",
    "ProviderUser",
    "PullRequest",
    "RateLimited",
    "Repository",
    "UnsupportedOperation",
    "Webhook",
    "client_for",
]
