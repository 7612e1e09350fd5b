"""The step-type registry: every step type a pipeline document may name, and what runs it.

One entry per type is the single source the rest reads: the document validator (unknown type,
``required_with`` fields, which types take ``executor: docker``), the workflow's dispatch and
the worker's registration (through ``activities.step_registry``, which maps each activity name
here to its activity method and checks the two agree at import), and the README's step table
(``tests/workflows/test_step_registry.py`` compares them). Adding a step type is one entry here and one
activity (see ARCHITECTURE.md, "Add a step type").

Documents may use every seed type; a type whose handler is not available yet (``available``
false) fails its step with a clear message instead of being refused at save time, so pipelines
written for later releases import today.

Also here, as the workflow's typed input: ``StepSpec``, one step of a run's pipeline snapshot.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Required, TypedDict

from domain.statuses import FINISHED_RUN, RunStatus, StepStatus


class StepRunner(StrEnum):
    """How the run's workflow executes a step of the type."""

    ACTIVITY = "activity"  # one activity per attempt (``StepType.activity``), with the step's retries and timeout
    GATE = "gate"  # decided inside the workflow: a condition, else an approval gate
    ROLLOUT = "rollout"  # a child RolloutWorkflow
    INTEGRATION = "integration"  # a child IntegrationExecutionWorkflow of an integration instance


@dataclass(frozen=True)
class StepType:
    """One step type. ``activity`` is the Temporal activity *name* of an ACTIVITY type: recorded
    in every run's history, so it never changes once released. ``required_with`` are the
    ``with`` fields it cannot run without (text; checked on save). ``container_capable``: it may
    run in a container (``with.executor: docker``, the default where the shell executor is off)."""

    name: str
    runner: StepRunner
    activity: str | None = None
    required_with: tuple[str, ...] = ()
    container_capable: bool = False
    available: bool = True


# In the seed's order (the validator's "expected one of" lists them so).
STEP_TYPE_REGISTRY: dict[str, StepType] = {entry.name: entry for entry in (
    StepType("checkout", StepRunner.ACTIVITY, "step_checkout"),
    StepType("claude_execute", StepRunner.ACTIVITY, "step_claude_execute"),
    StepType("post_comment", StepRunner.ACTIVITY, "step_post_comment", required_with=("body",)),
    StepType("create_pr", StepRunner.ACTIVITY, "step_create_pr", required_with=("title", "head")),
    StepType("create_branch", StepRunner.ACTIVITY, "step_create_branch", required_with=("name",)),
    StepType("upload_artifact", StepRunner.ACTIVITY, "step_upload_artifact", required_with=("name",)),
    StepType("download_artifact", StepRunner.ACTIVITY, "step_download_artifact", required_with=("name",)),
    StepType("run_tests", StepRunner.ACTIVITY, "step_run_tests", container_capable=True),
    StepType("deploy", StepRunner.ROLLOUT, required_with=("service", "image", "strategy")),
    StepType("notify", StepRunner.ACTIVITY, "step_notify"),
    StepType("code_factory_gate", StepRunner.GATE),
    StepType("custom", StepRunner.ACTIVITY, "step_custom", container_capable=True),
    StepType("integration", StepRunner.INTEGRATION, required_with=("instance",)),
)}


def step_type(name: str) -> StepType | None:
    """The registry entry of ``name``, or None for a type no document may use."""
    return STEP_TYPE_REGISTRY.get(name)


def step_type_names() -> tuple[str, ...]:
    return tuple(STEP_TYPE_REGISTRY)


def container_type_names() -> tuple[str, ...]:
    """The types that take ``executor: docker``, in registry order."""
    return tuple(name for name, entry in STEP_TYPE_REGISTRY.items() if entry.container_capable)


def defaults_to_container(type_name: str, with_: dict[str, Any]) -> bool:
    """Whether a step that names no executor runs in a container where the shell executor is off:
    a container-capable type, except a ``custom`` step naming a registered handler (the
    operator's own code, run in the worker). The validator and the workflow both decide by this."""
    entry = step_type(type_name)
    if entry is None or not entry.container_capable:
        return False
    return not (type_name == "custom" and with_.get("handler") is not None)


class StepRetry(TypedDict, total=False):
    max_attempts: int
    delay_seconds: float


class StepApproval(TypedDict, total=False):
    timeout_minutes: int
    recipients: list[str]
    require_comment: bool
    allow_self_approval: bool
    min_approvals: int


# One step of a run's snapshot, as ``domain.pipeline_document.step_snapshot`` writes it (None
# values left out). Functional form: ``if`` and ``with`` are Python keywords. A TypedDict is a
# plain dict at run time, so the workflow input's JSON is exactly what it was as ``dict[str, Any]``.
StepSpec = TypedDict("StepSpec", {
    "id": Required[str],
    "name": str,
    "type": Required[str],
    "if": str,
    "continue_on_error": bool,
    "timeout_minutes": int,
    "retry": StepRetry,
    "requires_approval": bool,
    "approval": StepApproval,
    "requires_trust": bool,
    "with": dict[str, Any],
}, total=False)

TRIGGER_TYPES: tuple[str, ...] = (
    "manual",
    "mission",
    "pull_request",
    "issue",
    "issue_comment",
    "push",
    "release",
    "schedule",
    "webhook",
    "workflow_dispatch",
)

# The status names as strings, for code that predates domain.statuses (the enums are the source).
RUN_STATUSES: tuple[str, ...] = tuple(status.value for status in RunStatus)
FINISHED_RUN_STATUSES: frozenset[str] = FINISHED_RUN
STEP_STATUSES: tuple[str, ...] = tuple(status.value for status in StepStatus)
