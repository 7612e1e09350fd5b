"""One client interface over GitHub, GitLab, Gitea and Bitbucket.

Every implementation maps its library's failures into this hierarchy, by HTTP status code and
headers (never by message text), so activities catch at the right level and Temporal's retry
policy can tell transient from permanent failures::

    ProviderError                 any failure talking to a provider (other 4xx land here)
    ├── AuthError                 401, or 403 that is not a rate limit: bad or under-scoped token
    ├── NotFound                  404: repository, pull request, hook ... does not exist (or is hidden)
    ├── RateLimited               429, or GitHub 403 with X-RateLimit-Remaining: 0 / Retry-After;
    │                             ``retry_after`` seconds when the provider said, else None
    ├── Conflict                  409, or a create that failed because the thing already exists
    ├── ProviderDown              5xx, connection refused, timeouts
    └── UnsupportedOperation      the provider lacks this capability or event

``retryable`` on each class says whether Temporal should retry (rate limits and outages only).
All methods are synchronous: activities run them in a thread.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

CommitState = Literal["pending", "success", "failure", "error"]
ListState = Literal["open", "closed", "all"]

#: Provider-neutral webhook event names; each client maps them to its own vocabulary.
WEBHOOK_EVENTS: frozenset[str] = frozenset(
    {"push", "tag_push", "pull_request", "issues", "issue_comment", "release"}
)

#: The seed's capability matrix (Git Integration → Capabilities per provider).
CAPABILITIES: dict[str, frozenset[str]] = {
    "github": frozenset({"repos", "branches", "commits", "pull_requests", "issues", "webhooks", "devops"}),
    "gitlab": frozenset({"repos", "branches", "commits", "merge_requests", "issues", "webhooks", "devops"}),
    "gitea": frozenset(
        {"repos", "branches", "commits", "pull_requests", "issues", "webhooks", "devops", "act_runner"}
    ),
    "bitbucket": frozenset(
        {"repos", "branches", "commits", "pull_requests", "issues", "webhooks", "pipelines"}
    ),
}


class ProviderError(Exception):
    """Base of every provider failure; ``status`` is the HTTP status when there was one."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status


class AuthError(ProviderError):
    """The token is wrong, expired, revoked or lacks the scope for this call."""


class NotFound(ProviderError):
    """The repository or object does not exist, or the token cannot see it."""


class RateLimited(ProviderError):
    """The provider throttled us; retry after ``retry_after`` seconds (None: unknown)."""

    retryable = True

    def __init__(
        self, message: str, *, provider: str = "", status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class Conflict(ProviderError):
    """The object already exists (branch, pull request, hook ...)."""


class ProviderDown(ProviderError):
    """The provider answered 5xx or could not be reached."""

    retryable = True


class UnsupportedOperation(ProviderError):
    """The provider has no such capability or event."""


@dataclass(frozen=True, slots=True)
class ProviderUser:
    """Who a token belongs to; ``scopes`` empty when the provider does not report them."""

    login: str
    name: str
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Repository:
    full_name: str
    default_branch: str
    language: str | None
    topics: tuple[str, ...]
    private: bool
    fork: bool
    archived: bool
    clone_url: str
    html_url: str


@dataclass(frozen=True, slots=True)
class Branch:
    name: str
    sha: str


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    message: str
    author_name: str
    authored_at: datetime | None
    url: str


@dataclass(frozen=True, slots=True)
class PullRequest:
    """A GitHub/Gitea/Bitbucket pull request or a GitLab merge request (``number`` = iid).

    ``state`` is normalised to open / closed / merged."""

    number: int
    url: str
    state: str
    title: str = ""
    head: str = ""
    base: str = ""


@dataclass(frozen=True, slots=True)
class Issue:
    number: int
    title: str
    state: str
    url: str


@dataclass(frozen=True, slots=True)
class Comment:
    """``created`` is False when an existing comment carrying the marker was edited instead."""

    id: str
    url: str
    created: bool


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    url: str
    events: tuple[str, ...]


def with_marker(body: str, marker: str) -> str:
    """The comment body carrying ``marker`` as a hidden HTML comment (rendered by all four)."""
    tag = f"<!-- {marker} -->"
    return body if tag in body else f"{body}\n\n{tag}"


def has_marker(body: str | None, marker: str) -> bool:
    return bool(body) and f"<!-- {marker} -->" in (body or "")


def parse_time(value: str | None) -> datetime | None:
    """ISO 8601 from any of the providers ('Z' suffix and fractions included)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def split_full_name(repo: str) -> tuple[str, str]:
    """'owner/name' → (owner, name); a bad name is a caller bug, so ValueError."""
    owner, _, name = repo.rpartition("/")
    if not owner or not name:
        raise ValueError(f"repository must be 'owner/name', got {repo!r}")
    return owner, name


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by these providers)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for_status(
    provider: str, status: int, headers: Mapping[str, str], message: str
) -> ProviderError:
    """The hierarchy member for a non-2xx answer of a plain REST API (Gitea, Bitbucket)."""
    if status == 429:
        return RateLimited(message, provider=provider, status=status,
                           retry_after=parse_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return AuthError(message, provider=provider, status=status)
    if status == 404:
        return NotFound(message, provider=provider, status=status)
    if status == 409:
        return Conflict(message, provider=provider, status=status)
    if status >= 500:
        return ProviderDown(message, provider=provider, status=status)
    return ProviderError(message, provider=provider, status=status)


class GitProviderClient(abc.ABC):
    """The operations pipelines and repository sync need from a git provider."""

    provider: ClassVar[str]
    #: Neutral event names (see WEBHOOK_EVENTS) this provider can deliver.
    webhook_events: ClassVar[frozenset[str]] = WEBHOOK_EVENTS

    @property
    def capabilities(self) -> frozenset[str]:
        return CAPABILITIES[self.provider]

    def require(self, capability: str) -> None:
        """Raise UnsupportedOperation unless the provider has ``capability``."""
        if capability not in self.capabilities:
            raise UnsupportedOperation(
                f"{self.provider} does not support {capability!r} "
                f"(it supports: {', '.join(sorted(self.capabilities))})",
                provider=self.provider,
            )

    def _check_events(self, events: list[str] | tuple[str, ...]) -> None:
        unknown = [e for e in events if e not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown webhook events {unknown}; known: {sorted(WEBHOOK_EVENTS)}")
        missing = [e for e in events if e not in self.webhook_events]
        if missing:
            raise UnsupportedOperation(
                f"{self.provider} webhooks cannot deliver {missing}", provider=self.provider
            )

    @abc.abstractmethod
    def current_user(self) -> ProviderUser: ...

    @abc.abstractmethod
    def list_repositories(self) -> list[Repository]: ...

    @abc.abstractmethod
    def list_branches(self, repo: str) -> list[Branch]: ...

    @abc.abstractmethod
    def list_commits(self, repo: str, branch: str, limit: int = 30) -> list[Commit]: ...

    def get_commit(self, repo: str, sha: str) -> Commit:
        """The commit ``sha`` names: a full or abbreviated hash (the provider resolves it, which
        is how a Bitbucket webhook's 12-character hash becomes the full SHA). NotFound if none."""
        raise UnsupportedOperation(f"{self.provider} client cannot look up a commit", provider=self.provider)

    @abc.abstractmethod
    def list_pull_requests(self, repo: str, state: ListState = "open") -> list[PullRequest]: ...

    @abc.abstractmethod
    def list_issues(self, repo: str, state: ListState = "open") -> list[Issue]: ...

    @abc.abstractmethod
    def create_branch(self, repo: str, name: str, from_sha: str) -> Branch:
        """Create ``name`` at ``from_sha``; Conflict if it already exists."""

    @abc.abstractmethod
    def create_pull_request(self, repo: str, title: str, head: str, base: str, body: str = "") -> PullRequest: ...

    @abc.abstractmethod
    def post_or_update_comment(self, repo: str, number: int, body: str, marker: str) -> Comment:
        """Edit the comment on PR/MR/issue ``number`` that carries ``marker``, or add one.

        Idempotent so an activity retried after a lost response leaves a single comment."""

    @abc.abstractmethod
    def set_commit_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        context: str,
        description: str = "",
        target_url: str | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def create_webhook(self, repo: str, url: str, secret: str, events: list[str]) -> Webhook: ...

    @abc.abstractmethod
    def update_webhook(self, repo: str, hook_id: str, url: str, secret: str, events: list[str]) -> Webhook: ...

    @abc.abstractmethod
    def delete_webhook(self, repo: str, hook_id: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most clients hold a pool worth closing
        """Release connections."""
