"""Pick the client for a provider type (the seed's ``Git::ApiClient.for``)."""

from __future__ import annotations

from adapters.git_providers.base import GitProviderClient, UnsupportedOperation
from adapters.git_providers.bitbucket import DEFAULT_BASE_URL as BITBUCKET_URL
from adapters.git_providers.bitbucket import BitbucketClient
from adapters.git_providers.gitea import GiteaClient
from adapters.git_providers.github import DEFAULT_BASE_URL as GITHUB_URL
from adapters.git_providers.github import GitHubClient
from adapters.git_providers.gitlab import DEFAULT_URL as GITLAB_URL
from adapters.git_providers.gitlab import GitLabClient

PROVIDER_TYPES = ("github", "gitlab", "gitea", "bitbucket")


def client_for(provider_type: str, base_url: str | None, token: str) -> GitProviderClient:
    """A client for ``provider_type`` at ``base_url`` (None: the public service; Gitea needs one).

    The token stays inside the client; callers load and decrypt it inside the activity."""
    if provider_type == "github":
        return GitHubClient(token, base_url or GITHUB_URL)
    if provider_type == "gitlab":
        return GitLabClient(token, base_url or GITLAB_URL)
    if provider_type == "gitea":
        if not base_url:
            raise ValueError("a Gitea provider needs its base URL")
        return GiteaClient(token, base_url)
    if provider_type == "bitbucket":
        return BitbucketClient(token, base_url or BITBUCKET_URL)
    raise UnsupportedOperation(
        f"unknown provider type {provider_type!r}; expected one of {', '.join(PROVIDER_TYPES)}"
    )
