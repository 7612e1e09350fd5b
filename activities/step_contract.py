"""What a step activity and the workflow agree on: the step's input and result, and how a
user-visible failure is raised.

Kept apart from ``activities.steps`` (the shell, git and HTTP handlers) so the modules that only
need the contract (the workflow, the git and container steps, the checkout credential) import
this small module instead of the handlers: no cycle between step modules, and the workflow's
sandbox passes through less.
"""

from dataclasses import dataclass, field
from typing import Any

from temporalio.exceptions import ApplicationError

# The ApplicationError type of a user-visible step failure: never retried by Temporal.
STEP_FAILED = "StepFailed"
HEARTBEAT_SECONDS = 1.0


@dataclass
class StepInput:
    run_id: int
    account_id: int
    pipeline_id: int
    step_id: str
    step_name: str
    attempt: int
    params: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    secret_names: list[str] = field(default_factory=list)
    secret_placeholder_prefix: str = ""
    run_number: int = 0
    # The repository, PR/issue number and commit of the webhook that triggered the run (git steps).
    trigger_repository_id: int | None = None
    trigger_number: int | None = None
    trigger_sha: str | None = None


@dataclass
class StepResult:
    outputs: dict[str, Any] = field(default_factory=dict)


def attempt_id(inp: StepInput) -> str:
    """``DEVOPS_STEP_ATTEMPT_ID``: one per user-level attempt, the same in every Temporal retry of
    it, so a command can make its side effects idempotent (a deploy id, a lock name)."""
    return f"{inp.run_id}-{inp.step_id}-{inp.attempt}"


def step_failed(message: str, outputs: dict[str, Any] | None = None) -> ApplicationError:
    return ApplicationError(message, outputs or {}, type=STEP_FAILED, non_retryable=True)


def secret_placeholder(prefix: str, name: str) -> str:
    """The text that stands for a secret in workflow-rendered values."""
    return f"{prefix}{name}__"
