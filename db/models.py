"""SQLAlchemy models: pipeline definitions plus the read model of runs.

Temporal is the truth for execution; these rows are what the API lists and shows. Every row
belongs to an account (directly or through its parent) and every query filters by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from db.base import WORKFLOW_ID_TABLE, Base, BigId, JSONType, UTCDateTime, utcnow  # noqa: F401


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("account_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20), default="member")  # domain.access.ROLES
    name: Mapped[str] = mapped_column(String(200), default="")
    # where this user's notifications (approval requests with their personal links) are POSTed
    notify_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    # a Slack-compatible incoming webhook receiving the same notifications as Slack messages
    notify_slack_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    # approval requests also go to ``email`` over SMTP (when the install has DEVOPS_SMTP_HOST)
    notify_email: Mapped[bool] = mapped_column(Boolean, default=False)
    # may create accounts (POST /accounts): the first account's first admin, set by bootstrap
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    # a deactivated user's tokens stop working at once; the row stays for the audit trail
    deactivated_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the clear value is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class Secret(Base):
    """A named secret of an account, encrypted at rest with the settings' key (Fernet)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    encrypted_value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Pipeline(Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("account_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    pipeline_type: Mapped[str] = mapped_column(String(20), default="custom")
    triggers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_system: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_concurrent: Mapped[bool] = mapped_column(Boolean, default=True)
    timeout_minutes: Mapped[int] = mapped_column(Integer, default=60)
    runner_labels: Mapped[list[Any]] = mapped_column(default=list)
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_number: Mapped[int] = mapped_column(Integer, default=0)
    template_version_id: Mapped[int | None] = mapped_column(Integer, default=None)  # installed from
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    steps: Mapped[list[PipelineStep]] = relationship(
        back_populates="pipeline",
        order_by="PipelineStep.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class PipelineStep(Base):
    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("pipeline_id", "step_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    step_type: Mapped[str] = mapped_column(String(40))
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the document's `with:`
    condition: Mapped[str | None] = mapped_column(Text, default=None)  # the document's `if:`
    continue_on_error: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    retry: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    # held for a maintainer's approval in runs from a fork's pull request
    requires_trust: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    approval: Mapped[dict[str, Any]] = mapped_column(default=dict)

    pipeline: Mapped[Pipeline] = relationship(back_populates="steps")


class PipelineRun(Base):
    __tablename__ = "pipeline_runs"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "run_number"),
        Index("ix_pipeline_runs_account_id_id", "account_id", "id"),
        # one run per mission (+ A2A task) and account, even for concurrent triggers (NULLs: any number)
        Index("uq_pipeline_runs_account_id_mission_key", "account_id", "mission_key", unique=True),
        WORKFLOW_ID_TABLE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    run_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    trigger_type: Mapped[str] = mapped_column(String(30), default="manual")
    trigger_context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    workflow_id: Mapped[str] = mapped_column(String(100), default="")
    pipeline_snapshot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    retry_of_run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id"), default=None)
    from_step: Mapped[str | None] = mapped_column(String(100), default=None)
    triggered_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # When Temporal accepted the run's workflow (or its queue's enqueue signal). A pending/queued
    # row still without it is the start outbox: the reconciler starts it or fails it with a reason.
    workflow_started_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    # A linked external (A2A) task: told the run's outcome by a signed callback when it ends.
    a2a_task_id: Mapped[str | None] = mapped_column(String(200), default=None)
    a2a_callback_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    a2a_callback_secret: Mapped[str | None] = mapped_column(String(100), default=None)  # an account secret's name
    a2a_callback_status: Mapped[str | None] = mapped_column(String(100), default=None)
    # The run a mission trigger started: sha256 hex of mission id + "\0" + A2A task id
    # (services.missions.mission_key); NULL for every other run, retries of a mission run included.
    mission_key: Mapped[str | None] = mapped_column(String(64), default=None)

    steps: Mapped[list[StepExecution]] = relationship(
        order_by="(StepExecution.position, StepExecution.attempt)", lazy="selectin", viewonly=True
    )


class StepExecution(Base):
    """One attempt of one step in one run."""

    __tablename__ = "step_executions"
    __table_args__ = (UniqueConstraint("run_id", "step_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    step_type: Mapped[str] = mapped_column(String(40), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    reused_from_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class RunEvent(Base):
    """Append-only feed of what happened to runs; the id only increases (SSE cursor)."""

    __tablename__ = "run_events"
    __table_args__ = (
        Index("ix_run_events_account_id_id", "account_id", "id"),
        UniqueConstraint("run_id", "dedupe_key"),
        # ids are stream cursors: SQLite must never hand out a deleted row's id again
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    pipeline_id: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepLogChunk(Base):
    """A batch of log lines of one step attempt; (run, step, attempt, seq) orders them."""

    __tablename__ = "step_log_chunks"
    __table_args__ = (UniqueConstraint("run_id", "step_id", "attempt", "seq"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepAttemptResult(Base):
    """How one try of a step attempt ended, written by the activity before it returns: a retry of
    the same attempt (the worker or Temporal died as the command finished) returns it instead of
    running the command again."""

    __tablename__ = "step_attempt_results"
    __table_args__ = (UniqueConstraint("run_id", "step_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a client sent with a create request: the same key (per account and
    operation) within its lifetime answers with the first request's resource, never a second one."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "scope", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str | None] = mapped_column(String(50), default=None)
    resource_id: Mapped[int | None] = mapped_column(Integer, default=None)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Schedule(Base):
    """A cron schedule of a pipeline; each row is the Temporal Schedule ``schedule-<id>``."""

    __tablename__ = "schedules"
    __table_args__ = (WORKFLOW_ID_TABLE,)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # "api" for schedules made through /schedules, "document" for a pipeline's triggers.schedule
    source: Mapped[str] = mapped_column(String(20), default="api")
    description: Mapped[str] = mapped_column(Text, default="")
    last_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StepApprovalToken(Base):
    """A single-use approval link for one recipient of one approval gate; only its hash is kept."""

    __tablename__ = "step_approval_tokens"
    __table_args__ = (Index("ix_step_approval_tokens_run_step", "run_id", "step_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    recipient: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApprovalDecision(Base):
    """Who decided an approval gate, when, how, and with what comment."""

    __tablename__ = "approval_decisions"
    __table_args__ = (Index("ix_approval_decisions_run_step", "run_id", "step_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    decision: Mapped[str] = mapped_column(String(20))  # approved | rejected
    decided_by: Mapped[str] = mapped_column(String(320))
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    token_id: Mapped[int | None] = mapped_column(Integer, default=None)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineTemplate(Base):
    """A reusable pipeline in the marketplace; its documents live in versions."""

    __tablename__ = "pipeline_templates"
    __table_args__ = (UniqueConstraint("account_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(20), default="custom")
    difficulty: Mapped[str] = mapped_column(String(20), default="beginner")
    status: Mapped[str] = mapped_column(String(20), default="draft")  # draft | published | archived
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    installation_count: Mapped[int] = mapped_column(Integer, default=0)
    rating_average: Mapped[float] = mapped_column(default=0.0)
    rating_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineTemplateVersion(Base):
    __tablename__ = "pipeline_template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("pipeline_templates.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(50))
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)
    changelog: Mapped[str] = mapped_column(Text, default="")
    published_at: Mapped[datetime | None] = mapped_column(default=None)  # published versions are immutable
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineTemplateRating(Base):
    __tablename__ = "pipeline_template_ratings"
    __table_args__ = (UniqueConstraint("template_id", "account_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("pipeline_templates.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    rating: Mapped[int] = mapped_column(Integer)
    review: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GitProvider(Base):
    """A git hosting service an account works with (the seed's ``GitProvider``)."""

    __tablename__ = "git_providers"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    provider_type: Mapped[str] = mapped_column(String(20))  # github | gitlab | gitea | bitbucket
    # None: the public service (github.com, gitlab.com, bitbucket.org); Gitea always has one
    base_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # OAuth application (authorization-code flow); the secret is encrypted like every token.
    # oauth_base_url: where /login/oauth/... (or /oauth/...) lives when it differs from base_url.
    oauth_client_id: Mapped[str | None] = mapped_column(String(500), default=None)
    encrypted_oauth_client_secret: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    oauth_base_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    oauth_scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GitProviderCredential(Base):
    """A token for a provider, encrypted at rest (Fernet via ``SecretBox``) and never returned."""

    __tablename__ = "git_provider_credentials"
    __table_args__ = (UniqueConstraint("provider_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("git_providers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    auth_type: Mapped[str] = mapped_column(String(20), default="token")  # token | oauth
    encrypted_token: Mapped[bytes] = mapped_column(LargeBinary)
    # OAuth credentials: refresh token (encrypted) and when the access token expires
    encrypted_refresh_token: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    token_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # what the last connection test learnt: who the token belongs to and its scopes
    username: Mapped[str | None] = mapped_column(String(200), default=None)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    last_tested_at: Mapped[datetime | None] = mapped_column(default=None)
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean, default=None)
    last_test_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OAuthState(Base):
    """A single-use ``state`` of the OAuth authorization-code flow, bound to the account and user
    that asked for it; only its SHA-256 is stored."""

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("git_providers.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    credential_name: Mapped[str] = mapped_column(String(100), default="oauth")
    redirect_uri: Mapped[str] = mapped_column(String(2000), default="")
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GitRepository(Base):
    """A repository seen through a provider credential (the seed's ``Devops::GitRepository``):
    upserted by ``RepositorySyncWorkflow``, marked removed (``removed_at``) when the provider no
    longer lists it. Our webhook's secret is encrypted; only the provider and we know it."""

    __tablename__ = "git_repositories"
    __table_args__ = (UniqueConstraint("provider_id", "full_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("git_providers.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[int | None] = mapped_column(
        ForeignKey("git_provider_credentials.id", ondelete="SET NULL"), default=None, index=True)
    full_name: Mapped[str] = mapped_column(String(500))
    default_branch: Mapped[str] = mapped_column(String(255), default="main")
    language: Mapped[str | None] = mapped_column(String(100), default=None)
    topics: Mapped[list[Any]] = mapped_column(default=list)
    visibility: Mapped[str] = mapped_column(String(20), default="private")  # private | public
    is_fork: Mapped[bool] = mapped_column(Boolean, default=False)
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False)
    clone_url: Mapped[str] = mapped_column(String(2000), default="")
    html_url: Mapped[str] = mapped_column(String(2000), default="")
    # none | exact | wildcard | regex, applied to a webhook's branch before pipeline matching
    branch_filter_type: Mapped[str] = mapped_column(String(20), default="none")
    branch_filter: Mapped[str | None] = mapped_column(String(500), default=None)
    webhook_id: Mapped[str | None] = mapped_column(String(100), default=None)
    encrypted_webhook_secret: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    webhook_events: Mapped[list[Any]] = mapped_column(default=list)
    webhook_configured_at: Mapped[datetime | None] = mapped_column(default=None)
    webhook_rejected_count: Mapped[int] = mapped_column(Integer, default=0)
    last_delivery_at: Mapped[datetime | None] = mapped_column(default=None)
    last_synced_at: Mapped[datetime | None] = mapped_column(default=None)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineRepository(Base):
    """Which repositories' webhooks may trigger which pipelines (the seed's PipelineRepository)."""

    __tablename__ = "pipeline_repositories"
    __table_args__ = (UniqueConstraint("pipeline_id", "repository_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("git_repositories.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GitWebhookEvent(Base):
    """One accepted (signature-verified) delivery; unique per repository and delivery id, which
    is what makes a redelivery start nothing new."""

    __tablename__ = "git_webhook_events"
    __table_args__ = (UniqueConstraint("repository_id", "delivery_id"), WORKFLOW_ID_TABLE)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("git_repositories.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[str] = mapped_column(String(200))
    event_name: Mapped[str | None] = mapped_column(String(100), default=None)
    # received | dispatched | ignored | failed
    status: Mapped[str] = mapped_column(String(20), default="received")
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload: Mapped[Any] = mapped_column(JSONType, default=dict)
    events: Mapped[list[Any]] = mapped_column(default=list)  # normalised trigger events
    matched_pipeline_ids: Mapped[list[Any]] = mapped_column(default=list)
    run_ids: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    workflow_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)


# ---- containers (issue 5) ------------------------------------------------------------------


class ContainerTemplate(Base):
    """How to run a container (the seed's ``ContainerTemplate``); safe by default, and the unsafe
    options (privileged, host network, extra capabilities, host bind mounts) are refused unless
    the account's ``ContainerPolicy`` allows them."""

    __tablename__ = "container_templates"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str] = mapped_column(String(500))
    command: Mapped[list[Any]] = mapped_column(default=list)  # argv; empty: the image's default
    entrypoint: Mapped[list[Any] | None] = mapped_column(JSONType, default=None)
    working_dir: Mapped[str] = mapped_column(String(500), default="/work")
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # environment variable name -> account secret name, injected at start and masked in logs
    secret_env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cpu_limit: Mapped[float] = mapped_column(default=1.0)  # cores
    memory_mb: Mapped[int] = mapped_column(Integer, default=256)
    pids_limit: Mapped[int] = mapped_column(Integer, default=128)
    storage_mb: Mapped[int] = mapped_column(Integer, default=512)  # writable work dir (tmpfs) size
    network_mode: Mapped[str] = mapped_column(String(20), default="none")  # none | bridge | host
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=600)
    artifact_paths: Mapped[list[Any]] = mapped_column(default=list)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    user: Mapped[str | None] = mapped_column(String(100), default="65534:65534")  # None: the image's user
    read_only_rootfs: Mapped[bool] = mapped_column(Boolean, default=True)
    privileged: Mapped[bool] = mapped_column(Boolean, default=False)
    cap_add: Mapped[list[Any]] = mapped_column(default=list)
    bind_mounts: Mapped[list[Any]] = mapped_column(default=list)  # [{"source", "target", "read_only"}]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContainerPolicy(Base):
    """What an account admin allows beyond the safe defaults (one row per account)."""

    __tablename__ = "container_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    allow_privileged: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_host_network: Mapped[bool] = mapped_column(Boolean, default=False)
    allowed_capabilities: Mapped[list[Any]] = mapped_column(default=list)
    allowed_bind_paths: Mapped[list[Any]] = mapped_column(default=list)  # host path prefixes
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ResourceQuota(Base):
    """Per-account container limits (the seed's ``ResourceQuota``), enforced atomically when an
    instance reserves its share; the quota row is the lock."""

    __tablename__ = "resource_quotas"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    max_concurrent: Mapped[int] = mapped_column(Integer, default=5)
    max_cpu: Mapped[float] = mapped_column(default=4.0)
    max_memory_mb: Mapped[int] = mapped_column(Integer, default=4096)
    max_storage_mb: Mapped[int] = mapped_column(Integer, default=10240)
    max_duration_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContainerInstance(Base):
    """One container execution (the seed's ``ContainerInstance``), run by
    ``ContainerExecutionWorkflow`` ``container-<id>``. Status: pending → provisioning → running →
    completed | failed | cancelled | timeout. Its reservation counts against the quota from
    creation until it ends."""

    __tablename__ = "container_instances"
    __table_args__ = (Index("ix_container_instances_account_status", "account_id", "status"), WORKFLOW_ID_TABLE)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("container_templates.id", ondelete="SET NULL"), default=None)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("docker_hosts.id", ondelete="SET NULL"), default=None)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), default=None,
                                               index=True)
    step_id: Mapped[str | None] = mapped_column(String(100), default=None)
    attempt: Mapped[int | None] = mapped_column(Integer, default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    name: Mapped[str] = mapped_column(String(200), default="")  # deterministic container name
    image: Mapped[str] = mapped_column(String(500))
    image_digest: Mapped[str | None] = mapped_column(String(200), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the resolved template + overrides
    container_id: Mapped[str | None] = mapped_column(String(100), default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    logs: Mapped[str] = mapped_column(Text, default="")  # capped at 100 KB with a marker
    logs_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    violations: Mapped[list[Any]] = mapped_column(default=list)
    artifacts: Mapped[list[Any]] = mapped_column(default=list)
    reserved_cpu: Mapped[float] = mapped_column(default=0.0)
    reserved_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    reserved_storage_mb: Mapped[int] = mapped_column(Integer, default=0)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=600)
    callback_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    callback_status: Mapped[str | None] = mapped_column(String(100), default=None)
    a2a_task_id: Mapped[str | None] = mapped_column(String(200), default=None)
    workflow_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_by_user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContainerEvent(Base):
    """Every status change and notable moment of an instance, append-only."""

    __tablename__ = "container_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("container_instances.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A checked tar in the artifact store: from a container's artifact paths or an
    ``upload_artifact`` step; ``store_key`` is its path inside the store."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), default=None,
                                               index=True)
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("container_instances.id", ondelete="CASCADE"), default=None, index=True)
    step_id: Mapped[str | None] = mapped_column(String(100), default=None)
    name: Mapped[str] = mapped_column(String(200))
    store_key: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    entries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- Docker hosts (issue 5) -----------------------------------------------------------------


class ManagedEngineEndpoint:
    """What a Docker host and a Swarm cluster share: one Docker engine endpoint of an account
    (``unix:///var/run/docker.sock`` or ``tcp://host:2376``, TLS material encrypted like every
    secret), kept in sync by a looping workflow, with the seed's health fields. Each subclass
    keeps its own table; the columns are the same as when they were written out twice."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        # a constraint object per table, hence a function; ids name sync workflows (never reused)
        return (UniqueConstraint("account_id", "name"), WORKFLOW_ID_TABLE)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(2000))  # unix:///var/run/docker.sock | tcp://host:2376
    environment: Mapped[str] = mapped_column(String(20), default="development")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    auto_sync: Mapped[bool] = mapped_column(Boolean, default=True)
    sync_interval_seconds: Mapped[int] = mapped_column(Integer, default=60)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_synced_at: Mapped[datetime | None] = mapped_column(default=None)
    events_cursor: Mapped[int | None] = mapped_column(BigInteger, default=None)  # unix nanoseconds
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    encrypted_tls_ca: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    encrypted_tls_cert: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    encrypted_tls_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    workflow_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def tls_configured(self) -> bool:
        return bool(self.encrypted_tls_cert or self.encrypted_tls_ca)


class DockerHost(ManagedEngineEndpoint, Base):
    """A Docker engine we manage (the seed's ``DockerHost``), kept in sync by ``HostSyncWorkflow``
    ``host-sync-<id>``."""

    __tablename__ = "docker_hosts"


class DockerContainer(Base):
    """A container seen on a host by the last sync; ``fingerprint`` lets a sync skip unchanged ones."""

    __tablename__ = "docker_containers"
    __table_args__ = (UniqueConstraint("host_id", "container_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("docker_hosts.id", ondelete="CASCADE"), index=True)
    container_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300), default="")
    image: Mapped[str] = mapped_column(String(500), default="")
    image_id: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(30), default="")
    status: Mapped[str] = mapped_column(String(200), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ports: Mapped[list[Any]] = mapped_column(default=list)
    created: Mapped[datetime | None] = mapped_column(default=None)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class DockerImage(Base):
    __tablename__ = "docker_images"
    __table_args__ = (UniqueConstraint("host_id", "image_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("docker_hosts.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[str] = mapped_column(String(100))
    repo_tags: Mapped[list[Any]] = mapped_column(default=list)
    repo_digests: Mapped[list[Any]] = mapped_column(default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[datetime | None] = mapped_column(default=None)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class DockerEvent(Base):
    """An engine event read from ``/events`` since the host's cursor."""

    __tablename__ = "docker_events"
    __table_args__ = (UniqueConstraint("host_id", "time_nano", "event_type", "action", "actor_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("docker_hosts.id", ondelete="CASCADE"), index=True)
    time_nano: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(100))
    actor_id: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DockerActivity(Base):
    """Every action we take on a host: who, what, when, result (the seed's ``DockerActivity``)."""

    __tablename__ = "docker_activities"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("docker_hosts.id", ondelete="SET NULL"), default=None,
                                                index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    action: Mapped[str] = mapped_column(String(100))  # container.create, image.pull, ...
    target: Mapped[str] = mapped_column(String(500), default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[str] = mapped_column(String(20), default="success")  # success | failure
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContainerRegistry(Base):
    """An image registry (the seed's ``RegistryService``); the password is encrypted."""

    __tablename__ = "container_registries"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2000))  # http(s)://host:port
    username: Mapped[str | None] = mapped_column(String(200), default=None)
    encrypted_password: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# ---- Docker Swarm and rollouts (issue 6) ------------------------------------------------------


class SwarmCluster(ManagedEngineEndpoint, Base):
    """A swarm reached through one manager's endpoint (the seed's ``SwarmCluster``), kept in sync
    by ``SwarmSyncWorkflow`` ``swarm-sync-<id>``; health like Docker hosts."""

    __tablename__ = "swarm_clusters"

    swarm_id: Mapped[str | None] = mapped_column(String(100), default=None)


class SwarmNode(Base):
    __tablename__ = "swarm_nodes"
    __table_args__ = (UniqueConstraint("cluster_id", "node_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("swarm_clusters.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(String(100))
    hostname: Mapped[str] = mapped_column(String(300), default="")
    role: Mapped[str] = mapped_column(String(20), default="worker")
    availability: Mapped[str] = mapped_column(String(20), default="active")
    state: Mapped[str] = mapped_column(String(20), default="")
    address: Mapped[str] = mapped_column(String(100), default="")
    engine_version: Mapped[str] = mapped_column(String(50), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class SwarmService(Base):
    __tablename__ = "swarm_services"
    __table_args__ = (UniqueConstraint("cluster_id", "service_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("swarm_clusters.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300))
    image: Mapped[str] = mapped_column(String(500), default="")
    mode: Mapped[str] = mapped_column(String(20), default="replicated")
    replicas: Mapped[int | None] = mapped_column(Integer, default=None)
    running_tasks: Mapped[int] = mapped_column(Integer, default=0)
    update_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ports: Mapped[list[Any]] = mapped_column(default=list)
    stack_name: Mapped[str | None] = mapped_column(String(200), default=None)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class SwarmStack(Base):
    """A stack we deployed from a compose file (the file is kept to redeploy and show)."""

    __tablename__ = "swarm_stacks"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("swarm_clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    compose: Mapped[str] = mapped_column(Text, default="")
    services: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="deployed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ServiceRevision(Base):
    """An immutable snapshot of a service's spec (image resolved to a digest), numbered per
    service, so a rollback can go to any earlier revision."""

    __tablename__ = "service_revisions"
    __table_args__ = (UniqueConstraint("cluster_id", "service_name", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("swarm_clusters.id", ondelete="CASCADE"), index=True)
    service_name: Mapped[str] = mapped_column(String(300))
    number: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(500))
    image_digest: Mapped[str | None] = mapped_column(String(200), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SwarmDeployment(Base):
    """One rollout (``RolloutWorkflow`` ``rollout-<id>``): rolling, canary or blue_green."""

    __tablename__ = "swarm_deployments"
    __table_args__ = (WORKFLOW_ID_TABLE,)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("swarm_clusters.id", ondelete="CASCADE"), index=True)
    service_name: Mapped[str] = mapped_column(String(300))
    strategy: Mapped[str] = mapped_column(String(20))  # rolling | canary | blue_green
    # pending | progressing | paused | promoting | completed | aborted | failed | rolled_back
    status: Mapped[str] = mapped_column(String(20), default="pending")
    revision_id: Mapped[int | None] = mapped_column(ForeignKey("service_revisions.id", ondelete="SET NULL"),
                                                    default=None)
    previous_revision_id: Mapped[int | None] = mapped_column(
        ForeignKey("service_revisions.id", ondelete="SET NULL"), default=None)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the strategy and its steps as asked
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)  # last known live state (step, weights ...)
    current_step: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    workflow_id: Mapped[str | None] = mapped_column(String(200), default=None)
    pipeline_run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="SET NULL"),
                                                        default=None)
    created_by_user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SwarmEvent(Base):
    """Engine events of a cluster, and our own: every change we make and every rollout step
    (``deployment_id`` set for those)."""

    __tablename__ = "swarm_events"
    # engine events carry "<time_nano>:<type>:<action>:<actor>"; NULL keys never collide
    __table_args__ = (UniqueConstraint("cluster_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("swarm_clusters.id", ondelete="CASCADE"), index=True)
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("swarm_deployments.id", ondelete="CASCADE"),
                                                      default=None, index=True)
    source: Mapped[str] = mapped_column(String(20), default="engine")  # engine | api | rollout
    event_type: Mapped[str] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(100), default="")
    actor_id: Mapped[str] = mapped_column(String(200), default="")
    time_nano: Mapped[int | None] = mapped_column(BigInteger, default=None)
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    result: Mapped[str | None] = mapped_column(String(20), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Users' invitations and the audit log live in their own module; importing it here puts their
# tables on Base.metadata wherever the models are loaded.
from db.access_models import AuditEvent, Invitation  # noqa: E402,F401
from db.ai_models import AiConfig, AiUsage, PromptTemplate, PromptTemplateVersion  # noqa: E402,F401
from db.integration_models import (  # noqa: E402,F401
    IntegrationCredential,
    IntegrationExecution,
    IntegrationInstance,
    IntegrationTemplate,
)
