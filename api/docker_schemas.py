"""Request and response shapes of ``/docker/...``: hosts, what runs on them, and registries.

TLS material of a host and a registry's password are write-only: they are stored encrypted and no
response carries them (``tls_configured`` / ``password_set`` say whether one is stored).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from api.engine_schemas import (  # noqa: F401 - the shared types, also re-exported for api/swarm_schemas.py
    EndpointCreate,
    EndpointPublic,
    EndpointSyncPublic,
    EndpointUpdate,
    HostEnvironment,
    Interval,
    Name,
    Pem,
    SyncCountsPublic,
    check_endpoint,
)
from api.pages import Page
from domain.statuses import EngineStatus

# Docker's own rule for container, network and volume names
EngineName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")]
ImageRef = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$")]
Repository = Annotated[str, Field(min_length=1, max_length=255,
                                  pattern=r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")]
Labels = dict[Annotated[str, Field(min_length=1, max_length=200)], Annotated[str, Field(max_length=1000)]]


def check_registry_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise PydanticCustomError("url", "a registry URL is http(s)://host[:port] without credentials in it")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PydanticCustomError("url", "a registry URL has no path: the Registry API lives under /v2/")
    try:
        parts.port  # noqa: B018 - validates it
    except ValueError:
        raise PydanticCustomError("url", "the port must be a number 1..65535") from None
    return value.rstrip("/")


# ---- hosts ---------------------------------------------------------------------------------------


class HostCreate(EndpointCreate):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "local", "endpoint": "unix:///var/run/docker.sock", "environment": "development"},
        {"name": "prod-1", "endpoint": "tcp://10.0.0.5:2376", "environment": "production",
         "tls_ca": "-----BEGIN CERTIFICATE-----...", "tls_cert": "-----BEGIN CERTIFICATE-----...",
         "tls_key": "-----BEGIN PRIVATE KEY-----...", "sync_interval_seconds": 120}]})


class HostUpdate(EndpointUpdate):
    """Only the fields sent change. Send a TLS field as null to remove it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"sync_interval_seconds": 300}, {"auto_sync": False}, {"endpoint": "tcp://10.0.0.6:2376"}]})


class HostPublic(EndpointPublic):
    status: EngineStatus = Field(description="as the last sync or test found it; `maintenance` is set by hand")
    containers: int
    images: int
    created_at: datetime
    updated_at: datetime


HostsPublic = Page[HostPublic]


class HostTestPublic(BaseModel):
    ok: bool
    docker_version: str | None = None
    api_version: str | None = None
    os: str | None = None
    architecture: str | None = None
    error: str | None = None


class HostSyncPublic(EndpointSyncPublic):
    host_status: str | None = None
    containers: SyncCountsPublic | None = None
    images: SyncCountsPublic | None = None
    events: int | None = None
    rows_written: int | None = None
    consecutive_failures: int | None = None
    error: str | None = None


# ---- containers ----------------------------------------------------------------------------------


class ContainerPublic(BaseModel):
    container_id: str
    name: str
    image: str
    image_id: str
    state: str
    status: str
    labels: dict[str, Any]
    ports: list[Any]
    created: datetime | None
    synced_at: datetime | None = Field(None, description="null when read live from the engine")


class ContainersPublic(Page[ContainerPublic]):
    live: bool = Field(description="read from the engine now (true) or from the last sync (false)")


class ContainerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"image": "busybox:latest", "command": ["sh", "-c", "echo hi"], "name": "hello", "env": {"A": "1"},
         "start": True}]})

    image: ImageRef
    command: list[Annotated[str, Field(max_length=10_000)]] | None = Field(None, max_length=200)
    env: dict[Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^=\x00]+$")],
              Annotated[str, Field(max_length=100_000)]] = Field(default_factory=dict)
    name: EngineName | None = None
    labels: Labels = Field(default_factory=dict)
    working_dir: str | None = Field(None, max_length=1000, pattern=r"^/")
    start: bool = False
    # The hardened defaults of container templates (services/container_specs.py); privileged, the host
    # network, cap_add and bind_mounts need the account's container policy (PUT /container_policy).
    user: str | None = Field("65534:65534", max_length=200,
                             description="user[:group]; null: the image's own user")
    read_only_rootfs: bool = True
    network_mode: Literal["none", "bridge", "host"] = "none"
    cpu_limit: float = Field(1.0, ge=0.1, le=16.0)
    memory_mb: int = Field(256, ge=16, le=65536)
    pids_limit: int = Field(128, ge=16, le=4096)
    privileged: bool = False
    cap_add: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(default_factory=list, max_length=50)
    bind_mounts: list[dict[str, Any]] = Field(default_factory=list, max_length=20,
                                              description="[{source, target, read_only}]")


class ContainerActionPublic(BaseModel):
    container_id: str
    name: str
    state: str
    status: str


class ContainerLogsPublic(BaseModel):
    container_id: str
    tail: int | None
    logs: str


# ---- images --------------------------------------------------------------------------------------


class ImagePublic(BaseModel):
    image_id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size_bytes: int
    created: datetime | None
    synced_at: datetime | None = None


class ImagesPublic(Page[ImagePublic]):
    live: bool = Field(description="read from the engine now (true) or from the last sync (false)")


class ImagePull(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"image": "library/busybox", "tag": "latest"}, {"image": "team/app", "tag": "1.2", "registry_id": 1}]})

    image: ImageRef = Field(description="repository; with registry_id, the repository inside that registry")
    tag: Tag = "latest"
    registry_id: int | None = None


class ImageTagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repository: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9._/:-]*$")]
    tag: Tag = "latest"


class ImagePush(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"image": "myapp:1.0", "registry_id": 1, "repository": "team/myapp", "tag": "1.0"}]})

    image: ImageRef = Field(description="a local image: id, or repository:tag")
    registry_id: int
    repository: Repository
    tag: Tag = "latest"


class ImageActionPublic(BaseModel):
    image_id: str | None
    repo_tags: list[str] = Field(default_factory=list)
    detail: str | None = None


# ---- networks and volumes ----------------------------------------------------------------------------


class NetworkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "backend"}]})

    name: EngineName
    driver: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9_./-]+$")] = "bridge"
    internal: bool = False
    labels: Labels = Field(default_factory=dict)


class NetworkPublic(BaseModel):
    id: str
    name: str
    driver: str | None
    scope: str | None
    internal: bool
    labels: dict[str, Any]
    containers: list[str] = Field(default_factory=list)
    created: str | None = None


NetworksPublic = Page[NetworkPublic]


class VolumeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "cache"}]})

    name: EngineName
    driver: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9_./-]+$")] = "local"
    labels: Labels = Field(default_factory=dict)


class VolumePublic(BaseModel):
    name: str
    driver: str | None
    mountpoint: str | None
    scope: str | None
    labels: dict[str, Any]
    created: str | None = None


VolumesPublic = Page[VolumePublic]


# ---- events and activities -----------------------------------------------------------------------------


class EventPublic(BaseModel):
    id: int
    host_id: int
    time: datetime
    time_nano: int
    event_type: str
    action: str
    actor_id: str
    attributes: dict[str, Any]


EventsPublic = Page[EventPublic]


class ActivityPublic(BaseModel):
    id: int
    host_id: int | None
    user_id: int | None
    action: str
    target: str
    params: dict[str, Any]
    result: str
    error: str | None
    created_at: datetime


ActivitiesPublic = Page[ActivityPublic]


# ---- registries ------------------------------------------------------------------------------------


class RegistryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "internal", "url": "https://registry.example.com", "username": "ci", "password": "s3cret"}]})

    name: Name
    url: str = Field(max_length=2000, description="http(s)://host[:port]")
    username: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    password: Annotated[str, Field(min_length=1, max_length=10_000)] | None = Field(
        None, description="write-only, stored encrypted")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_registry_url(value)


class RegistryUpdate(BaseModel):
    """Only the fields sent change; ``password: null`` removes the stored password."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    url: str | None = Field(None, max_length=2000)
    username: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    password: Annotated[str, Field(min_length=1, max_length=10_000)] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
        return check_registry_url(value)

    @field_validator("name")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
        return value


class RegistryPublic(BaseModel):
    id: int
    name: str
    url: str
    username: str | None
    password_set: bool
    created_at: datetime
    updated_at: datetime


RegistriesPublic = Page[RegistryPublic]


class RegistryTestPublic(BaseModel):
    ok: bool
    status_code: int | None = None
    api_version: str | None = None
    error: str | None = None


class RegistryRepositoriesPublic(BaseModel):
    registry_id: int
    repositories: list[str]


class RegistryTagsPublic(BaseModel):
    registry_id: int
    repository: str
    tags: list[str]
