"""AI configuration (issue 14): per-account model configs, versioned prompt templates, and the
token usage every ``claude_execute`` call records (the per-run and monthly budgets read it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, utcnow


class AiConfig(Base):
    """One model configuration of an account. ``provider``: ``anthropic`` (the Messages API) or
    ``openai_compatible`` (Chat Completions). The API key is encrypted at rest (SecretBox) and
    never returned; budgets are in tokens (input + output), None meaning unlimited."""

    __tablename__ = "ai_configs"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(30))
    model: Mapped[str] = mapped_column(String(200))
    encrypted_api_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    base_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    max_tokens: Mapped[int] = mapped_column(Integer, default=1024)
    temperature: Mapped[float | None] = mapped_column(Float, default=None)
    run_token_budget: Mapped[int | None] = mapped_column(Integer, default=None)
    monthly_token_budget: Mapped[int | None] = mapped_column(Integer, default=None)
    # USD per million tokens, for the cost estimate (None: no estimate)
    input_cost_per_mtok: Mapped[float | None] = mapped_column(Float, default=None)
    output_cost_per_mtok: Mapped[float | None] = mapped_column(Float, default=None)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PromptTemplate(Base):
    """A named prompt of an account; its text lives in versions, the newest being current."""

    __tablename__ = "prompt_templates"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(50), default="general")
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PromptTemplateVersion(Base):
    """One immutable version: the Jinja2 text (rendered sandboxed), an optional system prompt and
    the JSON Schema its variables must satisfy."""

    __tablename__ = "prompt_template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("prompt_templates.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text, default=None)
    variables_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AiUsage(Base):
    """One model call of a ``claude_execute`` step attempt: tokens, cost estimate, latency."""

    __tablename__ = "ai_usage"
    __table_args__ = (Index("ix_ai_usage_config_created", "ai_config_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    ai_config_id: Mapped[int | None] = mapped_column(ForeignKey("ai_configs.id", ondelete="SET NULL"),
                                                     default=None)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), default=None,
                                               index=True)
    step_id: Mapped[str | None] = mapped_column(String(100), default=None)
    attempt: Mapped[int | None] = mapped_column(Integer, default=None)
    provider: Mapped[str] = mapped_column(String(30))
    model: Mapped[str] = mapped_column(String(200))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_estimate: Mapped[float | None] = mapped_column(Float, default=None)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    stop_reason: Mapped[str | None] = mapped_column(String(50), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
