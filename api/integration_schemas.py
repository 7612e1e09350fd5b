"""Request and response shapes of the Integration Framework: ``/integration_templates``,
``/integration_credentials``, ``/integration_instances``, ``/integration_executions``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from domain.integrations import ExecutionStatus, InstanceStatus, IntegrationCategory, IntegrationType

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# credential fields: names usable in templates (``credentials.token``), values up to 16 KB
FieldName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
FieldValue = Annotated[str, Field(max_length=16384)]


class CredentialRequirement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=1000)
    required: bool = True


class IntegrationTemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Chat webhook", "slug": "chat-webhook", "integration_type": "webhook", "category": "notifications",
        "configuration_schema": {"type": "object", "required": ["url"],
                                 "properties": {"url": {"type": "string", "format": "uri"}}},
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
        "credential_requirements": [{"name": "signing_secret", "description": "HMAC key", "required": True}],
    }]})

    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(pattern=SLUG_PATTERN)
    description: str = Field("", max_length=10000)
    integration_type: IntegrationType
    category: IntegrationCategory
    version: str = Field("1.0.0", min_length=1, max_length=50)
    configuration_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of the configuration")
    input_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of an execution's inputs")
    output_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of an execution's outputs")
    credential_requirements: list[CredentialRequirement] = Field(default_factory=list, max_length=50)
    default_configuration: dict[str, Any] = Field(default_factory=dict)
    is_public: bool = False
    is_featured: bool = False


class IntegrationTemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, pattern=SLUG_PATTERN)
    description: str | None = Field(None, max_length=10000)
    integration_type: IntegrationType | None = None
    category: IntegrationCategory | None = None
    version: str | None = Field(None, min_length=1, max_length=50)
    configuration_schema: dict[str, Any] | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    credential_requirements: list[CredentialRequirement] | None = Field(None, max_length=50)
    default_configuration: dict[str, Any] | None = None
    is_public: bool | None = None
    is_featured: bool | None = None


class IntegrationTemplatePublic(BaseModel):
    id: int
    name: str
    slug: str
    description: str
    integration_type: IntegrationType
    category: IntegrationCategory
    version: str
    configuration_schema: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    credential_requirements: list[dict[str, Any]]
    default_configuration: dict[str, Any]
    is_public: bool
    is_featured: bool
    install_count: int
    usage_count: int
    owned: bool = Field(description="the caller's account owns it (only the owner may change it)")
    created_at: datetime
    updated_at: datetime


class IntegrationInstall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="unique in the account; a pipeline step names it")
    configuration: dict[str, Any] = Field(default_factory=dict,
                                          description="merged over the template's default_configuration")
    credential_id: int | None = None


class IntegrationInstanceCreate(IntegrationInstall):
    template_id: int


class IntegrationInstanceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=NAME_PATTERN)
    configuration: dict[str, Any] | None = None
    credential_id: int | None = None
    status: InstanceStatus | None = None


class IntegrationInstancePublic(BaseModel):
    id: int
    template_id: int
    name: str
    configuration: dict[str, Any]
    credential_id: int | None
    status: InstanceStatus
    execution_count: int
    success_count: int
    failure_count: int
    last_executed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class IntegrationCredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "chat", "credential_type": "signing_secret", "fields": {"signing_secret": "s3cr3t"}}]})

    name: str = Field(pattern=NAME_PATTERN)
    credential_type: str = Field("api_key", pattern=r"^[a-z0-9_]{1,30}$")
    fields: dict[FieldName, FieldValue] = Field(min_length=1, max_length=50,
                                   description="field name -> value; encrypted at rest, never returned")


class IntegrationCredentialUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=NAME_PATTERN)
    credential_type: str | None = Field(None, pattern=r"^[a-z0-9_]{1,30}$")
    fields: dict[FieldName, FieldValue] | None = Field(None, min_length=1, max_length=50,
                                          description="replaces every field (values never returned)")


class IntegrationCredentialPublic(BaseModel):
    id: int
    name: str
    credential_type: str
    field_names: list[str]
    created_at: datetime
    updated_at: datetime


class IntegrationExecute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict, description="validated against the template's input_schema")


class IntegrationExecutionPublic(BaseModel):
    id: int
    instance_id: int
    status: ExecutionStatus
    trigger_type: str
    run_id: int | None
    step_id: str | None
    input: dict[str, Any]
    output: dict[str, Any]
    error: str | None
    attempts: int
    workflow_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
