"""What a Docker host and a Swarm cluster share in the API: the managed engine endpoint's request
and response fields (:class:`db.models.ManagedEngineEndpoint`). ``api/docker_schemas.py`` and
``api/swarm_schemas.py`` extend these classes with their examples and their own fields.

TLS material is write-only: stored encrypted, never answered (``tls_configured`` says whether some is).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from adapters.temporal import TemporalGateway
from db.models import ManagedEngineEndpoint
from domain.statuses import EngineStatus

HostEnvironment = Literal["staging", "production", "development", "custom"]
MIN_INTERVAL, MAX_INTERVAL = 30, 3600
Interval = Annotated[int, Field(ge=MIN_INTERVAL, le=MAX_INTERVAL, description="seconds between sync rounds")]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Pem = Annotated[str, Field(min_length=1, max_length=20_000)]


def check_endpoint(value: str) -> str:
    """``unix:///absolute/path`` or ``tcp://host:port``; reachability is checked by the service."""
    parts = urlsplit(value)
    if parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc or parts.query or parts.fragment:
            raise PydanticCustomError("endpoint", "a unix endpoint is unix:///absolute/path/to/docker.sock")
        return value
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            raise PydanticCustomError("endpoint", "the port of a tcp endpoint must be a number 1..65535") from None
        if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.username:
            raise PydanticCustomError("endpoint", "a tcp endpoint is tcp://host:port (for example tcp://10.0.0.5:2376)")
        return value
    raise PydanticCustomError("endpoint", "the endpoint must start with unix:// or tcp://")


def not_null(value: Any) -> Any:
    """PATCH bodies: a field sent as null is refused (leave it out to keep the stored value)."""
    if value is None:
        raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
    return value


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    endpoint: str = Field(max_length=2000, description="unix:///path/to/docker.sock or tcp://host:port")
    environment: HostEnvironment = "development"
    auto_sync: bool = True
    sync_interval_seconds: Interval = 60
    tls_ca: Pem | None = Field(None, description="write-only, stored encrypted")
    tls_cert: Pem | None = Field(None, description="write-only, stored encrypted; with tls_key")
    tls_key: Pem | None = Field(None, description="write-only, stored encrypted; with tls_cert")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)


class EndpointUpdate(BaseModel):
    """Only the fields sent change. Send a TLS field as null to remove it."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    endpoint: str | None = Field(None, max_length=2000)
    environment: HostEnvironment | None = None
    auto_sync: bool | None = None
    sync_interval_seconds: Interval | None = None
    tls_ca: Pem | None = None
    tls_cert: Pem | None = None
    tls_key: Pem | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_endpoint(not_null(value))

    @field_validator("name", "environment", "auto_sync", "sync_interval_seconds")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        return not_null(value)


class EndpointPublic(BaseModel):
    """Subclasses add their own counts, then ``created_at`` and ``updated_at``."""

    id: int
    name: str
    endpoint: str
    environment: str
    status: EngineStatus = Field(description="as the last sync or connection test found it")
    auto_sync: bool
    sync_interval_seconds: int
    consecutive_failures: int
    last_error: str | None
    last_synced_at: datetime | None = Field(description="the last sync round that changed something")
    metrics: dict[str, Any]
    tls_configured: bool
    workflow_id: str | None
    temporal_ui_url: str | None


def endpoint_fields(row: ManagedEngineEndpoint, temporal: TemporalGateway) -> dict[str, Any]:
    """The :class:`EndpointPublic` fields of a host or cluster row (and its timestamps)."""
    fields = {name: getattr(row, name) for name in EndpointPublic.model_fields if name != "temporal_ui_url"}
    fields["metrics"] = dict(row.metrics or {})
    fields["temporal_ui_url"] = temporal.ui_url(row.workflow_id) if row.workflow_id else None
    return {**fields, "created_at": row.created_at, "updated_at": row.updated_at}


class SyncCountsPublic(BaseModel):
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


class EndpointSyncPublic(BaseModel):
    """One sync round requested through the API: its counts, or ``running`` after the wait."""

    status: Literal["completed", "running"]
    workflow_id: str
    temporal_ui_url: str
    ok: bool | None = None
