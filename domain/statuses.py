"""Every status the service stores and answers, as ``StrEnum``s.

Members compare equal to their string values, so the database columns (plain strings) and old
code comparing with ``"success"`` keep working, and response schemas typed with these enums
show the allowed values in OpenAPI. The values are the public API: never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A pipeline run."""

    PENDING = "pending"
    QUEUED = "queued"  # waiting for an earlier run of a pipeline that does not allow concurrent runs
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"


# The finished sets hold plain strings: they go into SQL (``IN (...)``) as well as comparisons.
FINISHED_RUN: frozenset[str] = frozenset(s.value for s in (RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELLED))


class StepStatus(StrEnum):
    """One step (attempt) of a run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    WAITING_APPROVAL = "waiting_approval"


class ApprovalDecision(StrEnum):
    """A recorded decision on an approval gate."""

    APPROVED = "approved"
    REJECTED = "rejected"


class ApprovalOutcome(StrEnum):
    """A gate's state after a decision."""

    APPROVED = "approved"
    REJECTED = "rejected"
    PENDING = "pending"


class DeploymentStatus(StrEnum):
    """A Swarm rollout (``SwarmDeployment``)."""

    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


FINISHED_DEPLOYMENT: frozenset[str] = frozenset(s.value for s in (
    DeploymentStatus.COMPLETED, DeploymentStatus.ABORTED, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK))


class ContainerStatus(StrEnum):
    """A container instance."""

    PENDING = "pending"
    QUEUED = "queued"  # over quota, waiting for room
    PROVISIONING = "provisioning"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


FINISHED_CONTAINER: frozenset[str] = frozenset(s.value for s in (
    ContainerStatus.COMPLETED, ContainerStatus.FAILED, ContainerStatus.CANCELLED, ContainerStatus.TIMEOUT))


class WebhookEventStatus(StrEnum):
    """A received repository webhook delivery."""

    RECEIVED = "received"
    IGNORED = "ignored"
    DISPATCHED = "dispatched"


class TemplateStatus(StrEnum):
    """A pipeline template in the marketplace."""

    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


class EngineStatus(StrEnum):
    """A managed engine endpoint (Docker host, Swarm cluster) as its last sync or test found it."""

    PENDING = "pending"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    MAINTENANCE = "maintenance"  # Docker hosts only: set by hand, syncs leave it alone


class StackStatus(StrEnum):
    """A Swarm stack: ours once deployed (its row goes when it is removed), or one found on the swarm."""

    DEPLOYED = "deployed"
