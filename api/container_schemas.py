"""Request and response shapes of the containers API (templates, policy, quotas, instances).

The bounds are those of :mod:`services.container_specs`; the requests check types and ranges, the
spec checks (syntax, secrets, the account's policy) run on the resolved spec in the routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.pages import Page
from domain.statuses import ContainerStatus
from services.container_specs import CPU_RANGE, MEMORY_RANGE, PIDS_RANGE, STORAGE_RANGE, TIMEOUT_RANGE

Cpu = Annotated[float, Field(ge=CPU_RANGE[0], le=CPU_RANGE[1], description="cores")]
MemoryMb = Annotated[int, Field(ge=MEMORY_RANGE[0], le=MEMORY_RANGE[1])]
PidsLimit = Annotated[int, Field(ge=PIDS_RANGE[0], le=PIDS_RANGE[1])]
StorageMb = Annotated[int, Field(ge=STORAGE_RANGE[0], le=STORAGE_RANGE[1],
                                 description="size of the writable work dir")]
TimeoutSeconds = Annotated[int, Field(ge=TIMEOUT_RANGE[0], le=TIMEOUT_RANGE[1])]
NetworkMode = Literal["none", "bridge", "host"]
ImageRef = Annotated[str, Field(min_length=1, max_length=500, examples=["local/busybox:latest"])]
TemplateName = Annotated[str, Field(min_length=1, max_length=200)]


class BindMount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(max_length=1000, description="host path, under one of the policy's allowed_bind_paths")
    target: str = Field(max_length=1000, description="absolute path inside the container")
    read_only: bool = True


class ContainerSpecFields(BaseModel):
    """Every field optional: a template update, or a launch's overrides (only sent fields count)."""

    model_config = ConfigDict(extra="forbid")

    image: ImageRef | None = None
    command: list[str] | None = Field(None, description="argv; empty: the image's default command")
    entrypoint: list[str] | None = None
    working_dir: str | None = Field(None, max_length=500, description="a writable tmpfs of storage_mb")
    env: dict[str, str] | None = None
    secret_env: dict[str, str] | None = Field(None, description="ENV_NAME -> name of one of the account's secrets")
    cpu_limit: Cpu | None = None
    memory_mb: MemoryMb | None = None
    pids_limit: PidsLimit | None = None
    storage_mb: StorageMb | None = None
    network_mode: NetworkMode | None = None
    timeout_seconds: TimeoutSeconds | None = None
    artifact_paths: list[str] | None = Field(None, description="absolute paths copied out as tar when it ends")
    labels: dict[str, str] | None = None
    user: str | None = Field(None, max_length=100, description="user[:group]; null: the image's own user")
    read_only_rootfs: bool | None = None
    privileged: bool | None = None
    cap_add: list[str] | None = None
    bind_mounts: list[BindMount] | None = None


class ContainerTemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "unit-tests", "image": "local/busybox:latest", "command": ["sh", "-c", "make test"],
         "env": {"CI": "true"}, "secret_env": {"API_TOKEN": "DEPLOY_TOKEN"}, "cpu_limit": 0.5, "memory_mb": 256,
         "timeout_seconds": 600, "artifact_paths": ["/work/out"]}]})

    name: TemplateName
    description: str = Field("", max_length=5000)
    image: ImageRef
    command: list[str] = Field(default_factory=list)
    entrypoint: list[str] | None = None
    working_dir: str = Field("/work", max_length=500)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(default_factory=dict)
    cpu_limit: Cpu = 1.0
    memory_mb: MemoryMb = 256
    pids_limit: PidsLimit = 128
    storage_mb: StorageMb = 512
    network_mode: NetworkMode = "none"
    timeout_seconds: TimeoutSeconds = 600
    artifact_paths: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    user: str | None = Field("65534:65534", max_length=100,
                             description="user[:group]; null: the image's own user (some images need root)")
    read_only_rootfs: bool = True
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list)
    bind_mounts: list[BindMount] = Field(default_factory=list)


# Template fields a PATCH (or a launch's override) may set to null: "no entrypoint override", "the image's user".
NULLABLE_TEMPLATE_FIELDS = ("entrypoint", "user")


class ContainerTemplateUpdate(ContainerSpecFields):
    name: TemplateName | None = None
    description: str | None = Field(None, max_length=5000)


class ContainerTemplatePublic(BaseModel):
    id: int
    name: str
    description: str
    image: str
    command: list[str]
    entrypoint: list[str] | None
    working_dir: str
    env: dict[str, str]
    secret_env: dict[str, str] = Field(description="ENV_NAME -> secret name (never the value)")
    cpu_limit: float
    memory_mb: int
    pids_limit: int
    storage_mb: int
    network_mode: str
    timeout_seconds: int
    artifact_paths: list[str]
    labels: dict[str, str]
    user: str | None
    read_only_rootfs: bool
    privileged: bool
    cap_add: list[str]
    bind_mounts: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


ContainerTemplatesPublic = Page[ContainerTemplatePublic]


# ---- policy and quota --------------------------------------------------------------------


class ContainerPolicyUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"allowed_capabilities": ["NET_BIND_SERVICE"], "allowed_bind_paths": ["/srv/cache"]}]})

    allow_privileged: bool | None = None
    allow_host_network: bool | None = None
    allowed_capabilities: list[str] | None = Field(None, max_length=50)
    allowed_bind_paths: list[str] | None = Field(None, max_length=50, description="host path prefixes")


class ContainerPolicyPublic(BaseModel):
    allow_privileged: bool
    allow_host_network: bool
    allowed_capabilities: list[str]
    allowed_bind_paths: list[str]
    updated_at: datetime | None


class ContainerQuotaUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"max_concurrent": 10}]})

    max_concurrent: int | None = Field(None, ge=0, le=1000)
    max_cpu: float | None = Field(None, ge=0, le=4096)
    max_memory_mb: int | None = Field(None, ge=0, le=16_777_216)
    max_storage_mb: int | None = Field(None, ge=0, le=104_857_600)
    max_duration_seconds: int | None = Field(None, ge=1, le=TIMEOUT_RANGE[1])


class ContainerQuotaLimits(BaseModel):
    max_concurrent: int
    max_cpu: float
    max_memory_mb: int
    max_storage_mb: int
    max_duration_seconds: int


class ContainerQuotaUsage(BaseModel):
    concurrent: int = Field(description="instances pending, provisioning or running")
    cpu: float
    memory_mb: int
    storage_mb: int


class ContainerQuotaPublic(BaseModel):
    limits: ContainerQuotaLimits
    usage: ContainerQuotaUsage
    queued: int = Field(description="instances waiting for quota")


# ---- instances ---------------------------------------------------------------------------


class ContainerLaunch(ContainerSpecFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"template_id": 1, "env": {"TARGET": "staging"}, "timeout_seconds": 300},
        {"image": "local/busybox:latest", "command": ["echo", "hi"], "queue": True}]})

    template_id: int | None = Field(None, description="start from this template; the other fields override it")
    callback_url: str | None = Field(None, max_length=2000,
                                     description="receives the result when it ends (signed like notify)")
    queue: bool = Field(False, description="over quota: wait (status queued) instead of answering 429")
    a2a_task_id: str | None = Field(None, min_length=1, max_length=200,
                                    description="a linked external (A2A) task, carried in the callback")


class ContainerEventPublic(BaseModel):
    id: int
    event_type: str
    payload: dict[str, Any]
    created_at: datetime


class ArtifactPublic(BaseModel):
    id: int
    name: str
    size_bytes: int
    sha256: str
    entries: int
    download_path: str = Field(description="GET it for the tar")
    created_at: datetime


class ContainerInstanceSummary(BaseModel):
    id: int
    name: str
    status: ContainerStatus
    image: str
    image_digest: str | None
    template_id: int | None
    host_id: int | None
    run_id: int | None
    step_id: str | None
    attempt: int | None
    exit_code: int | None
    error: str | None
    reserved_cpu: float
    reserved_memory_mb: int
    reserved_storage_mb: int
    timeout_seconds: int
    workflow_id: str | None
    created_by_user_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class ContainerInstancePublic(ContainerInstanceSummary):
    spec: dict[str, Any] = Field(description="the resolved template + overrides (secret names, never values)")
    container_id: str | None
    logs: str
    logs_truncated: bool
    usage: dict[str, Any]
    violations: list[Any]
    artifacts: list[ArtifactPublic]
    events: list[ContainerEventPublic]
    callback_url: str | None
    callback_status: str | None
    a2a_task_id: str | None = None
    temporal_ui_url: str | None


ContainerInstancesPublic = Page[ContainerInstanceSummary]
