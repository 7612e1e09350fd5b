"""What an integration executor is: one per integration type, behind one small interface.

``IntegrationExecutionWorkflow`` calls ``start`` once (an activity); an executor that finishes
at once returns ``outputs``; one that must wait for something outside (a GitHub Actions run)
returns ``poll_state`` and ``poll_after_seconds``, and the workflow sleeps on a durable timer and
calls ``poll`` with that state (another activity) until it returns ``outputs``. Executors hold
no state between calls: everything they need next time is in ``poll_state`` (plain JSON: it is
recorded in the workflow's history, so never a credential).

Failures: ``IntegrationFailed`` is final and its message is shown to the user (no credential in
it); ``IntegrationRetryable`` is transient (unreachable, 429/5xx, a server that died mid-call):
the activity is retried with backoff, honouring ``retry_after``, and the last message is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from settings import Settings


class IntegrationFailed(Exception):
    """A final, user-visible failure of an execution."""


class IntegrationRetryable(Exception):
    """A transient failure: try again (after ``retry_after`` seconds when the far side said so)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class ExecutorCall:
    account_id: int
    execution_id: int
    integration_type: str
    configuration: dict[str, Any]  # the template's default_configuration under the instance's own
    credentials: dict[str, str]  # decrypted credential fields; never logged, returned or put in poll_state
    inputs: dict[str, Any]  # validated against the template's input_schema
    settings: Settings
    http: httpx.AsyncClient | None = None  # tests hand in a client; None: make one per call
    attempt: int = 1  # the activity's attempt (1 on the first try)
    heartbeat: Any = None  # a callable(*details) to call while waiting on something long; None outside activities


@dataclass
class ExecutorOutcome:
    outputs: dict[str, Any] | None = None  # set: the execution finished with these outputs
    poll_state: dict[str, Any] | None = None  # set: call ``poll`` with it after ``poll_after_seconds``
    poll_after_seconds: float | None = None
    log: list[str] = field(default_factory=list)  # lines for the execution's record (no secrets)


class Executor(Protocol):
    async def start(self, call: ExecutorCall) -> ExecutorOutcome: ...

    async def poll(self, call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome: ...
