"""The activity behind :class:`~workflows.webhook_dispatch.WebhookDispatchWorkflow`.

``dispatch_webhook_event`` turns one stored delivery into runs: the repository's branch filter
first (push: the branch; pull request: its target branch), then ``triggers`` of every active
pipeline linked to the repository (``PipelineRepository``), one run per matching pipeline and
event, trigger type = the event kind and ``${{ trigger.* }}`` = the normalised event plus
``repository_id``, ``event_id`` and ``delivery_id``. The runs and the event's new status are
written in one transaction, so a retried activity finds them and only starts what is not started.

Abbreviated commit hashes (Bitbucket pull requests carry 12 characters) are expanded to full SHAs
through the provider API with the repository's credential first, so ``trigger.sha`` and the commit
statuses name the full commit; see ``_expand_short_shas`` for what happens when that fails.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from adapters.git_providers.base import ProviderError
from adapters.git_providers.credentials import ProviderAccess, access_for_repository
from adapters.temporal import TemporalGateway
from db.models import GitRepository, GitWebhookEvent, Pipeline, PipelineRepository, PipelineRun
from domain.errors import DomainError
from domain.webhooks.events import TriggerEvent
from domain.webhooks.matching import branch_filter_allows, matches
from services import runs as services
from settings import Settings
from workflows.pipeline_run import PipelineRunInput


@dataclass
class DispatchInput:
    event_id: int
    account_id: int


@dataclass
class DispatchResult:
    pipeline_ids: list[int] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why an event or pipeline started nothing
    notes: list[str] = field(default_factory=list)  # runs started, but with something to know (a short SHA)


#: Trigger fields holding a commit hash a provider may abbreviate.
SHA_FIELDS = ("sha", "head_sha", "merge_commit_sha", "before", "after")
_SHORT_SHA = re.compile(r"[0-9a-fA-F]{4,39}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: While the provider is down or throttling, the dispatch (retry policy DISPATCH_RETRY) waits for it
#: this many attempts (about 90 s), then starts the runs with the short hash rather than never.
EXPAND_ATTEMPTS = 9


def filtered_branch(event: TriggerEvent) -> str | None:
    """The branch a repository's branch filter applies to, or None when it does not apply."""
    if event.kind == "push":
        return None if event.tag is not None else event.branch
    if event.kind == "pull_request":
        return event.target_branch
    return None


class WebhookActivities:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], client: Client) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._temporal = TemporalGateway(settings, client)

    @activity.defn(name="dispatch_webhook_event")
    async def dispatch_webhook_event(self, inp: DispatchInput) -> DispatchResult:
        expanded, notes = await asyncio.to_thread(self._expand_short_shas, inp, activity.info().attempt)
        result, to_start = await asyncio.to_thread(self._prepare, inp, expanded, notes)
        for run, run_input in to_start:
            try:
                await services.start_run_workflow(self._temporal, self._settings, run, run_input)
            except WorkflowAlreadyStartedError:
                pass  # a retry: the first try's start went through
        # out of the start outbox (services.run_outbox): a row left unmarked is started again, idempotently
        await services.finish_start(self._temporal, self._sessions, [run for run, _ in to_start])
        return result

    def _expand_short_shas(self, inp: DispatchInput, attempt: int) -> tuple[dict[str, str], list[str]]:
        """Full SHAs for the abbreviated hashes of an event not yet dispatched, and notes on those
        that stay short. An outage or rate limit raises, so Temporal retries the dispatch, until
        attempt EXPAND_ATTEMPTS; then, or at once on a permanent failure (unknown commit, refused
        credential), the runs get the short hash and the event's ``error`` says why: a delivery
        is never lost to a lookup."""
        with self._sessions() as session:
            event = session.scalar(select(GitWebhookEvent).where(GitWebhookEvent.id == inp.event_id,
                                                                 GitWebhookEvent.account_id == inp.account_id))
            if event is None or event.status == "dispatched":
                return {}, []
            short = sorted({value for raw in event.events or [] for key in SHA_FIELDS
                            if isinstance(value := raw.get(key), str) and _SHORT_SHA.fullmatch(value)})
            repository_id = event.repository_id
        if not short:
            return {}, []
        expanded: dict[str, str] = {}
        notes: list[str] = []
        access: ProviderAccess | None = None
        try:
            with self._sessions.begin() as session:  # begin: an OAuth token refresh is written
                access, repository = access_for_repository(session, self._settings, inp.account_id, repository_id)
                full_name = repository.full_name
            for value in short:
                try:
                    full = access.client.get_commit(full_name, value).sha.lower()
                except ProviderError as exc:
                    if exc.retryable:
                        raise
                    notes.append(_masked(f"commit {value} was not expanded to its full SHA ({exc.message}); "
                                         "the run has the short hash", access))
                    continue
                if _FULL_SHA.fullmatch(full) and full.startswith(value.lower()):
                    expanded[value] = full
                else:
                    notes.append(f"commit {value}: the provider answered {full[:80]!r}, not its full SHA; "
                                 "the run has the short hash")
        except ProviderError as exc:
            message = _masked(exc.message, access)
            if exc.retryable and attempt < EXPAND_ATTEMPTS:
                raise ApplicationError(f"expanding commit {', '.join(short)} to a full SHA: {message}",
                                       type=type(exc).__name__) from None
            left = [value for value in short if value not in expanded]
            notes.append(f"commit {', '.join(left)} was not expanded to its full SHA ({message}); "
                         "the run has the short hash")
        except (ValueError, InvalidToken) as exc:  # a credential or provider row we cannot use: permanent
            notes.append(f"commit {', '.join(short)} was not expanded to its full SHA (the repository's provider "
                         f"or credential is unusable: {type(exc).__name__}); the run has the short hash")
        finally:
            if access is not None:
                access.close()
        return expanded, notes

    def _prepare(self, inp: DispatchInput, expanded: dict[str, str] | None = None, notes: list[str] | None = None
                 ) -> tuple[DispatchResult, list[tuple[PipelineRun, PipelineRunInput]]]:
        with self._sessions() as session:
            event = session.scalar(select(GitWebhookEvent).where(GitWebhookEvent.id == inp.event_id,
                                                                 GitWebhookEvent.account_id == inp.account_id))
            if event is None:
                return DispatchResult(skipped=[f"webhook event {inp.event_id} no longer exists"]), []
            if event.status == "dispatched":
                return self._already_dispatched(session, event)
            repository = session.scalar(select(GitRepository).where(GitRepository.id == event.repository_id,
                                                                    GitRepository.account_id == inp.account_id))
            if repository is None:
                return DispatchResult(skipped=[f"repository {event.repository_id} no longer exists"]), []
            pipelines = session.scalars(
                select(Pipeline)
                .join(PipelineRepository, PipelineRepository.pipeline_id == Pipeline.id)
                .where(PipelineRepository.repository_id == repository.id, Pipeline.account_id == inp.account_id)
                .order_by(Pipeline.id)
            ).all()
            result = DispatchResult(notes=list(notes or []))
            created: list[PipelineRun] = []
            if expanded:  # stored too, so the event shows what its runs got
                event.events = [{**raw, **{key: expanded[raw[key]] for key in SHA_FIELDS if raw.get(key) in expanded}}
                                for raw in event.events or []]
            for raw in event.events or []:
                trigger = TriggerEvent(**raw)
                branch = filtered_branch(trigger)
                if branch is not None and not branch_filter_allows(repository.branch_filter_type,
                                                                   repository.branch_filter, branch):
                    result.skipped.append(f"{trigger.kind} on '{branch}' is outside the repository's branch filter "
                                          f"({repository.branch_filter_type} {repository.branch_filter!r})")
                    continue
                for pipeline in pipelines:
                    if not matches(pipeline.triggers or {}, trigger):
                        continue
                    if not pipeline.is_active:
                        result.skipped.append(f"pipeline '{pipeline.name}' matches but is inactive")
                        continue
                    context: dict[str, Any] = {**trigger.as_context(), "repository_id": repository.id,
                                               "event_id": event.id, "delivery_id": event.delivery_id,
                                               "event_name": event.event_name}
                    try:
                        run = services.create_run(session, pipeline, trigger_type=trigger.kind, inputs={},
                                                  trigger_context=context)
                    except DomainError as exc:
                        result.skipped.append(f"pipeline '{pipeline.name}' matches but cannot start: "
                                              f"{_problem_text(exc)}")
                        continue
                    created.append(run)
                    if pipeline.id not in result.pipeline_ids:
                        result.pipeline_ids.append(pipeline.id)
            now = datetime.now(UTC)
            result.run_ids = [run.id for run in created]
            event.status = "dispatched"
            event.matched_pipeline_ids = result.pipeline_ids
            event.run_ids = result.run_ids
            event.error = "; ".join([*result.skipped, *result.notes]) or None
            event.processed_at = now
            repository.last_delivery_at = now
            to_start = [(run, services.workflow_input(run, self._settings)) for run in created]
            session.commit()
            return result, to_start

    def _already_dispatched(self, session: Session, event: GitWebhookEvent
                            ) -> tuple[DispatchResult, list[tuple[PipelineRun, PipelineRunInput]]]:
        result = DispatchResult(pipeline_ids=list(event.matched_pipeline_ids or []),
                                run_ids=list(event.run_ids or []))
        runs = session.scalars(select(PipelineRun).where(PipelineRun.id.in_(result.run_ids),
                                                         PipelineRun.status.in_(("pending", "queued")))).all()
        return result, [(run, services.workflow_input(run, self._settings)) for run in runs]


def _masked(text: str, access: ProviderAccess | None) -> str:
    return text.replace(access.token, "***") if access is not None and access.token else text


def _problem_text(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    problems = detail if isinstance(detail, list) else [{"msg": str(detail)}]
    parts = []
    for problem in problems:
        loc = [str(p) for p in problem.get("loc", []) if p != "body"]
        parts.append(f"{'.'.join(loc)}: {problem.get('msg')}" if loc else str(problem.get("msg")))
    return "; ".join(parts)
