"""Request and response shapes of ``/swarm/...``: clusters, nodes, services, stacks, events,
networks, volumes, secrets and configs.

A cluster's TLS material and a secret's data are write-only: stored encrypted (TLS) or handed to
the engine (secret data, never stored by us), and no response carries them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api.docker_schemas import (
    EngineName,
    ImageRef,
    Labels,
    NetworkPublic,
    NetworksPublic,
    VolumeCreate,
    VolumePublic,
    VolumesPublic,
)
from api.engine_schemas import (
    EndpointCreate,
    EndpointPublic,
    EndpointSyncPublic,
    EndpointUpdate,
    SyncCountsPublic,
)
from api.pages import Page
from domain.statuses import StackStatus

__all__ = ["NetworkPublic", "NetworksPublic", "VolumeCreate", "VolumePublic", "VolumesPublic"]

# Swarm's rules: service names are DNS labels; stack names prefix them (stack_service).
ServiceName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")]
StackName = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
ObjectName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")]
EnvName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^=\x00]+$")]
EnvValue = Annotated[str, Field(max_length=100_000)]
Seconds = Annotated[float, Field(ge=0, le=86_400)]


def _not_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
    return value


# ---- clusters --------------------------------------------------------------------------------------


class ClusterCreate(EndpointCreate):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "local", "endpoint": "unix:///var/run/docker.sock", "environment": "development"},
        {"name": "prod", "endpoint": "tcp://10.0.0.5:2376", "environment": "production",
         "tls_ca": "-----BEGIN CERTIFICATE-----...", "tls_cert": "-----BEGIN CERTIFICATE-----...",
         "tls_key": "-----BEGIN PRIVATE KEY-----..."}]})

    endpoint: str = Field(max_length=2000, description="a manager's engine: unix:///path or tcp://host:port")


class ClusterUpdate(EndpointUpdate):
    """Only the fields sent change. Send a TLS field as null to remove it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"sync_interval_seconds": 300}]})


class ClusterPublic(EndpointPublic):
    swarm_id: str | None
    nodes: int
    services: int
    created_at: datetime
    updated_at: datetime


ClustersPublic = Page[ClusterPublic]


class ClusterTestPublic(BaseModel):
    ok: bool
    swarm_id: str | None = None
    node_id: str | None = None
    is_manager: bool | None = None
    nodes: int | None = None
    managers: int | None = None
    docker_version: str | None = None
    error: str | None = None


class ClusterSyncPublic(EndpointSyncPublic):
    cluster_status: str | None = None
    nodes: SyncCountsPublic | None = None
    services: SyncCountsPublic | None = None
    stacks_updated: int | None = None
    events: int | None = None
    rows_written: int | None = None
    consecutive_failures: int | None = None
    error: str | None = None


# ---- nodes -------------------------------------------------------------------------------------------


class NodePublic(BaseModel):
    node_id: str
    hostname: str
    role: str
    availability: str
    state: str
    address: str
    engine_version: str
    labels: dict[str, Any]
    leader: bool = False
    synced_at: datetime | None = Field(None, description="null when read live from the engine")


class NodesPublic(Page[NodePublic]):
    live: bool


class NodeUpdate(BaseModel):
    """Only the fields sent change; ``labels`` replaces the node's labels."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"availability": "drain"}, {"labels": {"zone": "a"}}]})

    availability: Literal["active", "pause", "drain"] | None = None
    labels: Labels | None = None

    @field_validator("availability", "labels")
    @classmethod
    def _required(cls, value: Any) -> Any:
        return _not_null(value)


# ---- services -------------------------------------------------------------------------------------------


class UpdateConfigIn(BaseModel):
    """Swarm's update (and rollback) policy; durations in seconds."""

    model_config = ConfigDict(extra="forbid")

    parallelism: int = Field(1, ge=0, le=1000, description="tasks updated at once (0: all)")
    delay: Seconds = Field(0, description="seconds between batches")
    order: Literal["stop-first", "start-first"] = "stop-first"
    failure_action: Literal["pause", "continue", "rollback"] = "pause"
    monitor: Seconds = Field(5, description="seconds each task is watched for failure after its update")
    max_failure_ratio: float = Field(0, ge=0, le=1)


class HealthcheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/"], "interval": 2, "retries": 3}]})

    test: list[Annotated[str, Field(max_length=10_000)]] = Field(
        min_length=1, max_length=100, description='["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]')
    interval: Seconds = 30
    timeout: Seconds = 30
    retries: int = Field(3, ge=0, le=100)
    start_period: Seconds = 0

    @field_validator("test")
    @classmethod
    def _form(cls, value: list[str]) -> list[str]:
        if value[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise PydanticCustomError("healthcheck", "test starts with CMD, CMD-SHELL or NONE")
        if value[0] != "NONE" and len(value) < 2:
            raise PydanticCustomError("healthcheck", "test needs a command after CMD / CMD-SHELL")
        return value


class PortIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: int = Field(ge=1, le=65535, description="port inside the container")
    published: int | None = Field(None, ge=1, le=65535, description="port on the swarm (default: assigned)")
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"


class ServiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "web", "image": "nginx:1.27", "replicas": 2, "ports": [{"target": 80, "published": 8080}],
         "update_config": {"parallelism": 1, "delay": 5, "order": "start-first", "failure_action": "rollback",
                           "monitor": 10}}]})

    name: ServiceName
    image: ImageRef
    command: list[Annotated[str, Field(max_length=10_000)]] | None = Field(None, max_length=200)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    mode: Literal["replicated", "global"] = "replicated"
    replicas: int = Field(1, ge=0, le=1000)
    ports: list[PortIn] = Field(default_factory=list, max_length=100)
    networks: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list,
                                                                               max_length=50)
    labels: Labels = Field(default_factory=dict)
    update_config: UpdateConfigIn | None = None
    rollback_config: UpdateConfigIn | None = None
    healthcheck: HealthcheckIn | None = None

    @model_validator(mode="after")
    def _unique_ports(self) -> ServiceCreate:
        published = [(p.published, p.protocol) for p in self.ports if p.published]
        if len(published) != len(set(published)):
            raise PydanticCustomError("ports", "ports: a published port appears twice")
        return self


class ServiceUpdate(BaseModel):
    """Only the fields sent change; ``env`` replaces the environment."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"image": "web:2"}]})

    image: ImageRef | None = None
    env: dict[EnvName, EnvValue] | None = None
    command: list[Annotated[str, Field(max_length=10_000)]] | None = Field(None, max_length=200)
    replicas: int | None = Field(None, ge=0, le=1000)
    update_config: UpdateConfigIn | None = None
    labels: Labels | None = None

    @field_validator("image", "env", "replicas", "update_config", "labels")
    @classmethod
    def _required(cls, value: Any) -> Any:
        return _not_null(value)


class ServiceScale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=1000)


class ServicePublic(BaseModel):
    service_id: str
    name: str
    image: str
    mode: str
    replicas: int | None
    running_tasks: int
    update_config: dict[str, Any]
    labels: dict[str, Any]
    ports: list[Any]
    stack_name: str | None
    synced_at: datetime | None = Field(None, description="null when read live from the engine")


class ServicesPublic(Page[ServicePublic]):
    live: bool


class TaskPublic(BaseModel):
    task_id: str
    service_id: str
    slot: int | None
    node_id: str | None
    desired_state: str
    state: str
    message: str | None
    error: str | None
    exit_code: int | None
    container_id: str | None
    image: str
    created_at: str | None
    updated_at: str | None


TasksPublic = Page[TaskPublic]


class ServiceDetailPublic(BaseModel):
    service: ServicePublic
    spec: dict[str, Any] = Field(description="the engine's spec, environment values replaced by ***")
    previous_spec: dict[str, Any] | None
    version: int
    update_status: dict[str, Any] | None
    tasks: list[TaskPublic]


class ServiceLogsPublic(BaseModel):
    service: str
    tail: int | None
    logs: str


# ---- stacks ------------------------------------------------------------------------------------------------


class StackDeploy(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "shop", "compose": "version: '3.8'\nservices:\n  web:\n    image: nginx:1.27\n"}]})

    name: StackName
    compose: str = Field(min_length=1, max_length=1_000_000, description="a compose file (YAML)")
    resolve_image: Literal["always", "changed", "never"] = Field(
        "never", description="docker stack deploy --resolve-image: pin images to registry digests or not")


class StackPublic(BaseModel):
    id: int | None = Field(description="null for a stack on the swarm that we did not deploy")
    name: str
    status: StackStatus
    services: list[str]
    compose: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


StacksPublic = Page[StackPublic]


class StackDetailPublic(BaseModel):
    stack: StackPublic
    services: list[ServicePublic]
    tasks: list[TaskPublic]


# ---- events -------------------------------------------------------------------------------------------------


class SwarmEventPublic(BaseModel):
    id: int
    cluster_id: int
    deployment_id: int | None
    source: str
    event_type: str
    action: str
    actor_id: str
    time_nano: int | None
    user_id: int | None
    result: str | None
    payload: dict[str, Any]
    created_at: datetime


SwarmEventsPublic = Page[SwarmEventPublic]


# ---- networks, secrets and configs ----------------------------------------------------------------------------


class SwarmNetworkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "backend"}]})

    name: EngineName
    driver: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9_./-]+$")] = "overlay"
    attachable: bool = True
    internal: bool = False
    labels: Labels = Field(default_factory=dict)


class SwarmObjectCreate(BaseModel):
    """A secret or a config: ``data`` is UTF-8 text (a secret's is write-only: never returned,
    logged or stored by us)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "db_password", "data": "s3cret", "labels": {"team": "a"}}]})

    name: ObjectName
    data: str = Field(min_length=1, max_length=500_000)
    labels: Labels = Field(default_factory=dict)


class SwarmObjectPublic(BaseModel):
    id: str
    name: str
    labels: dict[str, Any]
    created_at: str | None
    updated_at: str | None


SwarmObjectsPublic = Page[SwarmObjectPublic]
