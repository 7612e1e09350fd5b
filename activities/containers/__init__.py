"""Container execution activities: everything ``ContainerExecutionWorkflow`` does on a Docker engine.

Every activity runs at least once, so each is idempotent: the container's name is deterministic
(``devops-<owner>-c<instance id>``), a retried ``provision`` adopts the container a previous try started
(and removes one it only created), a retried ``wait_for_exit`` re-attaches to the running container
and re-reads its log from the start (the step log skips the lines already forwarded, counted in
the heartbeat details), status events carry a dedupe key, and removal treats NotFound as done.

All blocking Docker and database calls run in threads. Secret values are resolved here, passed to
Docker as environment, and masked (plain, base64, URL-encoded) in every log line we store; they
never reach the workflow. Containers carry the labels ``devops.instance``, ``devops.account``,
``devops.owner`` (this deployment: a hash of its database URL, so two deployments sharing an
engine never sweep each other's containers) and, inside a pipeline run, ``devops.run`` /
``devops.step`` / ``devops.attempt``.

Errors: a ``ContainerSpecError`` (bad spec, image not on the host, missing secret, Docker refusing
the configuration), ``QuotaNeverFits`` and ``ContainerInstanceMissing`` are non-retryable
``ApplicationError``s with a message for the user; ``DockerApiError`` is retried by the workflow's
policy.

The working directory: a tmpfs of ``storage_mb`` (mode 1777) when the spec has no artifact paths.
With artifact paths it is an anonymous Docker volume instead, because Docker cannot copy out of a
tmpfs (``get_archive`` does not see tmpfs mounts, running or stopped); the volume is removed with
the container, and its size is bounded only by the host's disk (the vfs driver has no quota).
``/tmp`` is always a tmpfs of ``storage_mb``; tmpfs pages also count against ``memory_mb``.

This module is the public surface: ``ContainerActivities`` joins one class per concern, each in
its own submodule on a shared base (``base``): ``lifecycle`` (prepare, reserve, provision, kill,
remove, sweep), ``running`` (wait_for_exit), ``artifacts`` and ``callbacks`` (finish). The
workflow's inputs, results and error types are in ``contract``, the spec and the engine's create
arguments in ``spec``, the log follower in ``logs`` and usage sampling in ``usage``.
"""

from __future__ import annotations

from activities.containers.artifacts import ArtifactActivities
from activities.containers.base import DOCKER_TIMEOUT_SECONDS
from activities.containers.callbacks import CallbackActivities, callback_signing_key
from activities.containers.contract import (
    CONTAINER_SPEC_ERROR,
    DOCKER_API_ERROR,
    FINAL_STATUSES,
    HEARTBEAT_SECONDS,
    INSTANCE_MISSING,
    NON_RETRYABLE_TYPES,
    QUOTA_NEVER_FITS,
    CollectArtifactsResult,
    ContainerExit,
    ContainerInstanceInput,
    ContainerPlan,
    FinishContainerInput,
    FinishContainerResult,
    ProvisionResult,
    ReserveResult,
    SweepOrphansInput,
    SweepOrphansResult,
    spec_error,
)
from activities.containers.lifecycle import LifecycleActivities
from activities.containers.logs import LOG_CAP_BYTES, LOG_SAVE_SECONDS, LOG_TRUNCATED_MARKER, CappedLog
from activities.containers.running import RunningActivities
from activities.containers.spec import (
    MIB,
    ContainerSpec,
    container_name,
    create_kwargs,
    instance_labels,
    owner_label,
)
from activities.containers.usage import STATS_SECONDS, UsageTracker

__all__ = [
    "CONTAINER_SPEC_ERROR",
    "DOCKER_API_ERROR",
    "DOCKER_TIMEOUT_SECONDS",
    "FINAL_STATUSES",
    "HEARTBEAT_SECONDS",
    "INSTANCE_MISSING",
    "LOG_CAP_BYTES",
    "LOG_SAVE_SECONDS",
    "LOG_TRUNCATED_MARKER",
    "MIB",
    "NON_RETRYABLE_TYPES",
    "QUOTA_NEVER_FITS",
    "STATS_SECONDS",
    "CappedLog",
    "CollectArtifactsResult",
    "ContainerActivities",
    "ContainerExit",
    "ContainerInstanceInput",
    "ContainerPlan",
    "ContainerSpec",
    "FinishContainerInput",
    "FinishContainerResult",
    "ProvisionResult",
    "ReserveResult",
    "SweepOrphansInput",
    "SweepOrphansResult",
    "UsageTracker",
    "callback_signing_key",
    "container_name",
    "create_kwargs",
    "instance_labels",
    "owner_label",
    "spec_error",
]


class ContainerActivities(LifecycleActivities, RunningActivities, ArtifactActivities, CallbackActivities):
    """Every activity of ``ContainerExecutionWorkflow`` on one object (what the worker registers).
    Clients and settings are injected; ``docker_client`` defaults to the local engine
    (``DOCKER_HOST`` or the socket), and an instance with ``host_id`` uses that host's endpoint."""
