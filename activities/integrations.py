"""The activities of ``IntegrationExecutionWorkflow`` and of the ``integration`` step.

``start`` and ``poll`` load the execution, its instance, template and credential, decrypt the
credential here (it never leaves this process: not in arguments, results or messages), and call
the executor of the template's type (``adapters.integrations.EXECUTORS``). Executor failures map
to Temporal: ``IntegrationFailed`` is a non-retryable ``ApplicationError`` of type
``IntegrationFailed``, ``IntegrationRetryable`` a retryable one whose next delay is the far
side's ``retry_after``. ``finish`` records the outcome; ``prepare_step`` makes the execution row
of a pipeline step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.step_contract import StepInput, step_failed
from adapters.integrations import EXECUTORS
from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed, IntegrationRetryable
from domain.errors import DomainError
from services import integration_executions as executions
from settings import Settings

INTEGRATION_FAILED = "IntegrationFailed"
INTEGRATION_RETRYABLE = "IntegrationRetryable"
HEARTBEAT_SECONDS = 2.0
T = TypeVar("T")


@dataclass
class IntegrationRef:
    execution_id: int
    account_id: int


@dataclass
class IntegrationPollInput:
    execution_id: int
    account_id: int
    poll_state: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntegrationProgress:
    outputs: dict[str, Any] | None = None
    poll_state: dict[str, Any] | None = None
    poll_after_seconds: float | None = None
    ended: str | None = None  # the execution had already ended (cancelled while pending): its status


@dataclass
class IntegrationFinishInput:
    execution_id: int
    account_id: int
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class IntegrationFinishResult:
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class IntegrationStepPlan:
    execution_id: int
    workflow_id: str
    timeout_minutes: int


class IntegrationActivities:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._sessions = sessions
        self._http = http

    @activity.defn(name="integration_start")
    async def start(self, ref: IntegrationRef) -> IntegrationProgress:
        attempt = activity.info().attempt
        loaded = await asyncio.to_thread(self._load, ref.execution_id, ref.account_id, attempt, True)
        if isinstance(loaded, str):
            return IntegrationProgress(ended=loaded)
        executor, call = loaded
        return self._progress(call, await self._call(call, executor.start(call)))

    @activity.defn(name="integration_poll")
    async def poll(self, inp: IntegrationPollInput) -> IntegrationProgress:
        loaded = await asyncio.to_thread(self._load, inp.execution_id, inp.account_id, activity.info().attempt, False)
        if isinstance(loaded, str):
            return IntegrationProgress(ended=loaded)
        executor, call = loaded
        return self._progress(call, await self._call(call, executor.poll(call, inp.poll_state)))

    @activity.defn(name="integration_finish")
    async def finish(self, inp: IntegrationFinishInput) -> IntegrationFinishResult:
        status, outputs, error = await asyncio.to_thread(
            executions.record_outcome, self._sessions, inp.account_id, inp.execution_id, inp.status,
            inp.outputs, inp.error)
        return IntegrationFinishResult(status=status, outputs=outputs, error=error)

    @activity.defn(name="integration_step_prepare")
    async def prepare_step(self, inp: StepInput) -> IntegrationStepPlan:
        """The execution row of an ``integration`` step (instance by name or id, inputs checked
        against the template's input_schema); a problem fails the step with the reason."""
        try:
            execution_id, workflow_id = await asyncio.to_thread(
                executions.create_for_step, self._sessions, inp.account_id, inp.run_id, inp.step_id, inp.params)
        except DomainError as exc:
            raise step_failed(executions.problem_text(exc)) from None
        return IntegrationStepPlan(execution_id=execution_id, workflow_id=workflow_id,
                                   timeout_minutes=self._settings.integration_timeout_minutes)

    # ---- helpers ---------------------------------------------------------------------------------

    def _load(self, execution_id: int, account_id: int, attempt: int, starting: bool) -> Any:
        try:
            loaded = executions.load_for_executor(self._sessions, self._settings, account_id, execution_id,
                                                  attempt=attempt, starting=starting)
        except DomainError as exc:
            raise ApplicationError(executions.problem_text(exc), type=INTEGRATION_FAILED, non_retryable=True) from None
        if isinstance(loaded, str):
            return loaded
        integration_type, configuration, credentials, inputs = loaded
        executor = EXECUTORS.get(integration_type)
        if executor is None:
            raise ApplicationError(f"no executor for integration type {integration_type!r} in this release "
                                   f"(available: {', '.join(sorted(EXECUTORS)) or 'none'})",
                                   type=INTEGRATION_FAILED, non_retryable=True)
        call = ExecutorCall(account_id=account_id, execution_id=execution_id, integration_type=integration_type,
                            configuration=configuration, credentials=credentials, inputs=inputs,
                            settings=self._settings, http=self._http, attempt=attempt, heartbeat=activity.heartbeat)
        return executor, call

    async def _call(self, call: ExecutorCall, work: Awaitable[T]) -> T:
        """Run the executor's call, heartbeating (so a cancel reaches it); map its failures."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
                if done:
                    return task.result()
                activity.heartbeat()
        except IntegrationFailed as exc:
            raise ApplicationError(_masked(str(exc), call.credentials) or "the integration failed",
                                   type=INTEGRATION_FAILED, non_retryable=True) from None
        except IntegrationRetryable as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
            raise ApplicationError(_masked(str(exc), call.credentials) or "the integration failed (transient)",
                                   type=INTEGRATION_RETRYABLE, next_retry_delay=delay) from None
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    @staticmethod
    def _progress(call: ExecutorCall, outcome: ExecutorOutcome) -> IntegrationProgress:
        if outcome.outputs is not None:
            return IntegrationProgress(outputs=_masked(outcome.outputs, call.credentials))
        return IntegrationProgress(poll_state=outcome.poll_state, poll_after_seconds=outcome.poll_after_seconds)


def _masked(value: Any, credentials: dict[str, str]) -> Any:
    """``value`` with every credential value (4 characters or more) replaced: a far side that
    echoes a token back must not put it into the history, the database or a step's outputs."""
    secrets = sorted((v for v in credentials.values() if isinstance(v, str) and len(v) >= 4), key=len, reverse=True)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {_masked(k, credentials): _masked(v, credentials) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, credentials) for v in value]
    return value


def integration_activities(activities: IntegrationActivities) -> list[Any]:
    """The methods a worker registers."""
    return [activities.start, activities.poll, activities.finish, activities.prepare_step]
