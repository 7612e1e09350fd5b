"""Git step types that talk to a provider (create_branch, create_pr, post_comment), the
``set_commit_status`` activity (the credential side of a private ``checkout`` is
``activities.checkout_source``).

The repository a step acts on is ``with.repository_id`` (a ``GitRepository`` of the run's
account) or else the repository whose webhook triggered the run. The provider client and its
token are loaded inside the activity (``access_for_repository``) and never leave it: messages,
logs and outputs are masked for the token and for the ``user:token`` pair git sends.

Every step is idempotent because activities run at least once: an existing branch at the same
commit, an open pull request for the same head → base, and the comment carrying this run's and
step's marker are found and returned instead of being made twice. Provider errors are mapped by
class: ``RateLimited`` and ``ProviderDown`` are raised for Temporal to retry, every other
``ProviderError`` fails the step (``StepFailed``) with a message a user can act on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.checkout_source import ChainedMasker, git_http_user, repository_id_param, token_masker
from activities.step_contract import HEARTBEAT_SECONDS, StepInput, StepResult, step_failed
from activities.steps import StepActivities
from adapters.git_providers.base import (
    Branch,
    GitProviderClient,
    ProviderError,
    PullRequest,
    RateLimited,
    UnsupportedOperation,
)
from adapters.git_providers.credentials import ProviderAccess, access_for_repository
from db.models import GitRepository
from domain.masking import Masker

log = logging.getLogger(__name__)

T = TypeVar("T")

_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")


def comment_marker(run_id: int, step_id: str) -> str:
    """The hidden marker that makes post_comment update its own comment on a re-run."""
    return f"devops-run-{run_id}-step-{step_id}"


async def _in_thread_with_heartbeats(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking provider calls in a thread, heartbeating meanwhile: a slow provider must not
    look like a lost worker to the step's heartbeat timeout."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    while not (await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS))[0]:
        activity.heartbeat()
    return task.result()


def retryable_error(exc: ProviderError, masker: Masker) -> ApplicationError:
    """A rate limit or outage, raised for Temporal's retry policy (after ``retry_after`` when known)."""
    delay = None
    if isinstance(exc, RateLimited) and exc.retry_after:
        delay = timedelta(seconds=min(exc.retry_after, 600))
    return ApplicationError(masker.mask(exc.message), type=type(exc).__name__, next_retry_delay=delay)


# ---- set_commit_status -----------------------------------------------------------------


@dataclass
class SetCommitStatusInput:
    account_id: int
    repository_id: int
    sha: str
    state: str  # pending | success | failure | error
    context: str = ""  # default "devops/<pipeline_name>"
    description: str = ""
    target_url: str | None = None
    pipeline_name: str = ""


@dataclass
class SetCommitStatusResult:
    set: bool
    error: str | None = None


# ---- the activities --------------------------------------------------------------------


@dataclass
class _Target:
    """What a git step works with once its repository is resolved."""

    access: ProviderAccess
    repository: GitRepository
    masker: Masker
    is_trigger_repository: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client(self) -> GitProviderClient:
        return self.access.client

    @property
    def full_name(self) -> str:
        return self.repository.full_name


class GitStepActivities(StepActivities):
    """Step handlers that act on a repository through its provider's API."""

    def _target(self, inp: StepInput, params: dict[str, Any], step_type: str) -> _Target:
        repository_id = params.get("repository_id")
        if repository_id is None:
            repository_id = inp.trigger_repository_id
        if repository_id is None:
            raise step_failed(f"{step_type} needs `with.repository_id` or a run triggered by a repository webhook")
        repository_id = repository_id_param(repository_id)
        with self._sessions.begin() as session:
            try:
                access, repository = access_for_repository(session, self._settings, inp.account_id, repository_id)
            except ProviderError as exc:
                raise step_failed(f"{step_type}: {exc.message}") from None
        user = git_http_user(access.provider.provider_type)
        return _Target(access=access, repository=repository, masker=token_masker(access.token, user),
                       is_trigger_repository=repository.id == inp.trigger_repository_id)

    async def _run(self, inp: StepInput, step_type: str,
                   work: Callable[[dict[str, Any], _Target], tuple[dict[str, Any], str]]) -> StepResult:
        """Resolve the repository, run ``work`` (blocking provider calls) in a thread, log its
        line, and map provider errors to a step failure or a Temporal retry."""
        params, _env, secrets_masker = await asyncio.to_thread(self._prepare, inp)
        target = await _in_thread_with_heartbeats(self._target, inp, params, step_type)
        masker = ChainedMasker(target.masker, secrets_masker)
        failure: str | None = None
        try:
            outputs, line = await _in_thread_with_heartbeats(work, params, target)
        except ProviderError as exc:
            if exc.retryable:
                raise retryable_error(exc, masker) from None
            failure = masker.mask(f"{step_type} on {target.full_name} failed: {_describe(exc)}")
            line = f"[devops] {failure}"
            outputs = {}
        finally:
            await asyncio.to_thread(target.access.close)
        writer = await asyncio.to_thread(self._log_writer, inp, masker)
        writer.line(line)
        await writer.aflush()
        if failure:
            raise step_failed(failure)
        return StepResult(outputs=masker.mask_value(outputs))

    # ---- create_branch -----------------------------------------------------------------

    @activity.defn(name="step_create_branch")
    async def create_branch(self, inp: StepInput) -> StepResult:
        """Create branch ``with.name`` at ``with.from`` (a commit SHA or a branch; default the
        triggering commit, else the default branch). An existing branch at that commit is a
        success with ``created: false``. Outputs ``branch``, ``sha``, ``created``."""

        def work(params: dict[str, Any], target: _Target) -> tuple[dict[str, Any], str]:
            name = params.get("name")
            if not isinstance(name, str) or not name.strip() or name.startswith("-"):
                raise step_failed("create_branch needs `with.name`: the branch to create")
            name = name.strip().removeprefix("refs/heads/")
            branches = {b.name: b.sha for b in target.client.list_branches(target.full_name)}
            from_sha = _start_point(params.get("from"), target, branches, inp)
            existing = branches.get(name)
            if existing is None:
                try:
                    made: Branch | None = target.client.create_branch(target.full_name, name, from_sha)
                except ProviderError as exc:
                    # A concurrent or lost earlier try made it: look again before failing.
                    existing = {b.name: b.sha for b in target.client.list_branches(target.full_name)}.get(name)
                    if existing is None:
                        raise exc from None
                    made = None
                if made is not None:
                    sha = made.sha or from_sha
                    return ({"branch": name, "sha": sha, "created": True},
                            f"[devops] created branch {name} at {sha} in {target.full_name}")
            assert existing is not None
            if not _same_commit(existing, from_sha):
                raise step_failed(f"branch {name!r} already exists in {target.full_name} at {existing}, "
                                  f"not at {from_sha}; pick another name or delete the branch")
            return ({"branch": name, "sha": existing, "created": False},
                    f"[devops] branch {name} already exists at {existing} in {target.full_name}")

        return await self._run(inp, "create_branch", work)

    # ---- create_pr ---------------------------------------------------------------------

    @activity.defn(name="step_create_pr")
    async def create_pr(self, inp: StepInput) -> StepResult:
        """Open a pull request (GitLab: merge request) ``with.head`` → ``with.base`` (default the
        repository's default branch) titled ``with.title`` with ``with.body``. An open one for
        the same head → base is returned instead (``created: false``). Outputs ``number``, ``url``,
        ``created``."""

        def work(params: dict[str, Any], target: _Target) -> tuple[dict[str, Any], str]:
            title, head = params.get("title"), params.get("head")
            if not isinstance(title, str) or not title.strip():
                raise step_failed("create_pr needs `with.title`: the pull request's title")
            if not isinstance(head, str) or not head.strip():
                raise step_failed("create_pr needs `with.head`: the branch with the changes")
            base = params.get("base") or target.repository.default_branch
            if not isinstance(base, str) or not base.strip():
                raise step_failed("`with.base` must be a branch name")
            body = params.get("body") or ""
            if not isinstance(body, str):
                raise step_failed("`with.body` must be text")
            client = target.client
            capability = "merge_requests" if "merge_requests" in client.capabilities else "pull_requests"
            client.require(capability)
            found = _open_pull_request(client, target.full_name, head, base)
            if found is None:
                try:
                    made = client.create_pull_request(target.full_name, title, head, base, body)
                except ProviderError as exc:
                    found = _open_pull_request(client, target.full_name, head, base)
                    if found is None:
                        raise exc from None
                else:
                    return ({"number": made.number, "url": made.url, "created": True},
                            f"[devops] opened #{made.number} {head} → {base} in {target.full_name}: {made.url}")
            return ({"number": found.number, "url": found.url, "created": False},
                    f"[devops] #{found.number} {head} → {base} is already open in {target.full_name}: {found.url}")

        return await self._run(inp, "create_pr", work)

    # ---- post_comment ------------------------------------------------------------------

    @activity.defn(name="step_post_comment")
    async def post_comment(self, inp: StepInput) -> StepResult:
        """Comment ``with.body`` on pull request / issue ``with.number`` (default the triggering
        one). The comment carries a marker of this run and step, so running the step again edits
        it instead of adding another. Outputs ``comment_id``, ``url``, ``created``."""

        def work(params: dict[str, Any], target: _Target) -> tuple[dict[str, Any], str]:
            body = params.get("body")
            if not isinstance(body, str) or not body.strip():
                raise step_failed("post_comment needs `with.body`: the comment's text")
            number = params.get("number")
            if number is None and target.is_trigger_repository:
                number = inp.trigger_number
            if number is None:
                raise step_failed("post_comment needs `with.number` (the pull request or issue) or a run "
                                  "triggered by a pull request or issue of this repository")
            if isinstance(number, bool) or not str(number).lstrip("#").isdigit():
                raise step_failed("`with.number` must be a pull request or issue number")
            number = int(str(number).lstrip("#"))
            comment = target.client.post_or_update_comment(target.full_name, number, body,
                                                           comment_marker(inp.run_id, inp.step_id))
            verb = "posted" if comment.created else "updated"
            return ({"comment_id": comment.id, "url": comment.url, "created": comment.created},
                    f"[devops] {verb} comment {comment.id} on #{number} in {target.full_name}: {comment.url}")

        return await self._run(inp, "post_comment", work)

    # ---- set_commit_status -------------------------------------------------------------

    @activity.defn(name="set_commit_status")
    async def set_commit_status(self, inp: SetCommitStatusInput) -> SetCommitStatusResult:
        """Set a commit status (GitHub context, GitLab pipeline job name, Bitbucket build key).

        A status is a courtesy, so a permanent failure (bad token, unknown commit, unsupported)
        is logged and answered with ``set: false``, never raised; rate limits and outages are
        raised for Temporal to retry."""
        return await _in_thread_with_heartbeats(self._set_commit_status, inp)

    def _set_commit_status(self, inp: SetCommitStatusInput) -> SetCommitStatusResult:
        if inp.state not in ("pending", "success", "failure", "error"):
            return SetCommitStatusResult(set=False, error=f"unknown commit state {inp.state!r}")
        context = inp.context or f"devops/{inp.pipeline_name or 'pipeline'}"
        masker: Masker = Masker()
        try:
            with self._sessions.begin() as session:
                access, repository = access_for_repository(session, self._settings, inp.account_id,
                                                           inp.repository_id)
                full_name = repository.full_name
            masker = token_masker(access.token, git_http_user(access.provider.provider_type))
            try:
                access.client.set_commit_status(full_name, inp.sha, inp.state,  # type: ignore[arg-type]
                                                context, inp.description, inp.target_url)
            finally:
                access.close()
        except ProviderError as exc:
            if exc.retryable:
                raise retryable_error(exc, masker) from None
            message = masker.mask(f"commit status {inp.state!r} for {inp.sha[:12]} not set: {_describe(exc)}")
            log.warning("repository %s: %s", inp.repository_id, message)
            return SetCommitStatusResult(set=False, error=message)
        return SetCommitStatusResult(set=True)


# ---- helpers ---------------------------------------------------------------------------


def _describe(exc: ProviderError) -> str:
    if isinstance(exc, UnsupportedOperation):
        return exc.message
    hints = {401: "the provider rejected the repository's credential (wrong, expired or revoked token)",
             403: "the repository's credential lacks the permission for this"}
    hint = hints.get(exc.status or 0)
    return f"{exc.message}; {hint}" if hint else exc.message


def _same_commit(full: str, given: str) -> bool:
    return full.lower().startswith(given.lower()) or given.lower().startswith(full.lower())


def _start_point(value: Any, target: _Target, branches: dict[str, str], inp: StepInput) -> str:
    """The commit a new branch starts at: ``with.from`` as a branch or SHA, else the triggering
    commit, else the default branch's head."""
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            raise step_failed("`with.from` must be a branch name or a commit SHA")
        value = value.strip().removeprefix("refs/heads/")
        if value in branches:
            return branches[value]
        if _SHA.match(value):
            return value
        raise step_failed(f"`with.from` {value!r} is neither a branch of {target.full_name} nor a commit SHA")
    if target.is_trigger_repository and inp.trigger_sha:
        return inp.trigger_sha
    default = target.repository.default_branch
    if default not in branches:
        raise step_failed(f"the default branch {default!r} of {target.full_name} was not found; "
                          "give `with.from`")
    return branches[default]


def _open_pull_request(client: GitProviderClient, repo: str, head: str, base: str) -> PullRequest | None:
    return next((p for p in client.list_pull_requests(repo, "open") if p.head == head and p.base == base), None)
