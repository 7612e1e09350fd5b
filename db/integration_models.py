"""The Integration Framework (issue 14): templates (a marketplace entry with its JSON Schemas),
an account's installed instances, their encrypted credentials, and every execution, run by
``IntegrationExecutionWorkflow`` ``integration-execution-<id>``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.base import WORKFLOW_ID_TABLE, Base, utcnow


class IntegrationTemplate(Base):
    """A marketplace entry. ``account_id`` owns it; ``is_public`` lists it to every account
    (read-only to them). ``integration_type``: github_action, webhook, mcp_server, rest_api,
    custom. ``configuration_schema``/``input_schema``/``output_schema`` are JSON Schemas;
    ``credential_requirements`` lists ``{"name", "description", "required"}`` fields a
    credential must carry; ``default_configuration`` is merged under an instance's own."""

    __tablename__ = "integration_templates"
    __table_args__ = (UniqueConstraint("account_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    integration_type: Mapped[str] = mapped_column(String(30))
    category: Mapped[str] = mapped_column(String(30))
    version: Mapped[str] = mapped_column(String(50), default="1.0.0")
    configuration_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    credential_requirements: Mapped[list[Any]] = mapped_column(default=list)
    default_configuration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_featured: Mapped[bool] = mapped_column(Boolean, default=False)
    install_count: Mapped[int] = mapped_column(Integer, default=0)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IntegrationCredential(Base):
    """Named secret fields of an account for integrations (a token, a signing secret...): the
    whole ``{field: value}`` object encrypted at rest; only the field names are ever shown."""

    __tablename__ = "integration_credentials"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    credential_type: Mapped[str] = mapped_column(String(30), default="api_key")
    encrypted_data: Mapped[bytes] = mapped_column(LargeBinary)
    field_names: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IntegrationInstance(Base):
    """A template installed in an account: its configuration (validated against the template's
    schema on every write) and the credential it uses."""

    __tablename__ = "integration_instances"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("integration_templates.id", ondelete="RESTRICT"),
                                             index=True)
    credential_id: Mapped[int | None] = mapped_column(
        ForeignKey("integration_credentials.id", ondelete="SET NULL"), default=None)
    name: Mapped[str] = mapped_column(String(100))
    configuration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | paused
    execution_count: Mapped[int] = mapped_column(Integer, default=0)
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    last_executed_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IntegrationExecution(Base):
    """One execution of an instance. Status: pending → running → success | failure | cancelled.
    ``trigger_type``: api, pipeline (an ``integration`` step: ``run_id``/``step_id`` set)."""

    __tablename__ = "integration_executions"
    __table_args__ = (Index("ix_integration_executions_account_id_id", "account_id", "id"), WORKFLOW_ID_TABLE)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("integration_instances.id", ondelete="CASCADE"),
                                             index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    trigger_type: Mapped[str] = mapped_column(String(20), default="api")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), default=None,
                                               index=True)
    step_id: Mapped[str | None] = mapped_column(String(100), default=None)
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    workflow_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_by_user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)
