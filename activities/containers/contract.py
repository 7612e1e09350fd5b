"""What ``ContainerExecutionWorkflow`` and the container activities exchange: the activities'
inputs and results, the final statuses, and the error types (which ones the workflow must not retry)."""

from __future__ import annotations

from dataclasses import dataclass, field

import docker.errors
from temporalio.exceptions import ApplicationError

FINAL_STATUSES = ("completed", "failed", "cancelled", "timeout")
# How often the long-running activities (wait_for_exit, collect_artifacts) heartbeat.
HEARTBEAT_SECONDS = 2.0

CONTAINER_SPEC_ERROR = "ContainerSpecError"
QUOTA_NEVER_FITS = "QuotaNeverFits"
INSTANCE_MISSING = "ContainerInstanceMissing"
DOCKER_API_ERROR = "DockerApiError"
NON_RETRYABLE_TYPES = [CONTAINER_SPEC_ERROR, QUOTA_NEVER_FITS, INSTANCE_MISSING]


def spec_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=CONTAINER_SPEC_ERROR, non_retryable=True)


def docker_error(action: str, exc: Exception) -> ApplicationError:
    """A retryable error, unless Docker says the request itself is wrong (4xx but 404/409)."""
    if isinstance(exc, docker.errors.APIError) and exc.status_code in (400, 403, 422):
        return spec_error(f"Docker refused to {action}: {exc.explanation or exc}")
    detail = exc.explanation if isinstance(exc, docker.errors.APIError) else str(exc)
    return ApplicationError(f"Docker error while trying to {action}: {type(exc).__name__}: {detail}",
                            type=DOCKER_API_ERROR)


@dataclass
class ContainerInstanceInput:
    instance_id: int
    account_id: int


@dataclass
class ContainerPlan:
    status: str
    timeout_seconds: int
    heartbeat_timeout_seconds: float
    memory_mb: int
    artifact_count: int = 0


@dataclass
class ReserveResult:
    reserved: bool
    status: str
    reason: str | None = None


@dataclass
class ProvisionResult:
    container_id: str
    image_digest: str


@dataclass
class ContainerExit:
    exit_code: int | None
    oom_killed: bool = False
    violations: list[str] = field(default_factory=list)


@dataclass
class CollectArtifactsResult:
    stored: int = 0
    refused: int = 0
    missing: int = 0


@dataclass
class FinishContainerInput:
    instance_id: int
    account_id: int
    status: str
    error: str | None = None
    exit_code: int | None = None
    send_callback: bool = True  # False: A2ACallbackWorkflow delivers it (issue 14)


@dataclass
class FinishContainerResult:
    callback_status: str | None = None


@dataclass
class SweepOrphansInput:
    host_id: int | None = None


@dataclass
class SweepOrphansResult:
    removed: list[str] = field(default_factory=list)
