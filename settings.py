"""The one configuration object shared by the API, the worker, the migrations and the launcher.

Every value can be overridden by an environment variable with the ``DEVOPS_`` prefix
(``DEVOPS_DATABASE_URL``, ``DEVOPS_API_PORT``...). Nothing reads the environment at import
time: call :func:`get_settings` (or build ``Settings(...)`` explicitly, as tests do).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEVELOPMENT_SECRET_KEY = "development-only-secret-key-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEVOPS_", extra="ignore")

    environment: str = Field("development", description="development | test | production")
    data_dir: Path = Path(".data")
    database_url: str = Field("", description="SQLAlchemy URL; empty means a SQLite file in data_dir")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "devops-pipelines"
    workflow_sandbox: bool = Field(
        False, description="run workflows in Temporal's sandbox in this worker, as the tests and the replay suite "
                           "always do; off by default: measured ~30 ms more worker CPU per run (README, How it works)")
    temporal_ui_port: int = 8233
    temporal_ui_url: str = Field("", description="public Temporal UI base URL; empty means http://127.0.0.1:<ui port>")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_api_url: str = ""

    secret_key: str = Field(DEVELOPMENT_SECRET_KEY, description="signs and encrypts; rotate with old_secret_keys")
    old_secret_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="previous secret keys: a JSON list or comma-separated"
    )

    workspace_dir: Path | None = None
    artifact_dir: Path | None = Field(None, description="the artifact store; empty means <data_dir>/artifacts")
    step_heartbeat_timeout_seconds: float = 30.0
    default_step_timeout_minutes: int = 60
    notify_allow_private_targets: bool = Field(
        False, description="older name of allow_private_targets; either one set to true allows internal targets")
    allow_private_targets: bool = Field(
        False, description="let users point notify/approval targets, provider base URLs, checkout URLs (local paths, "
                           "file://) and image registries at loopback, private or link-local addresses")

    # ---- tenant isolation (see README "Security model") ----
    shell_executor: bool = Field(
        False, description="allow `executor: shell` steps outside DEVOPS_ENVIRONMENT=development: they run on the "
                           "worker's machine. Trusted single-tenant installs only")
    step_uid_base: int = Field(
        200000, ge=1000, description="a worker running as root runs shell steps of account N as uid/gid "
                                     "step_uid_base + N, never as root")
    engine_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Docker/Swarm endpoints accounts may register (fnmatch patterns, JSON list "
                                          "or comma-separated). Empty: any remote endpoint; local ones (unix "
                                          "sockets, loopback) only in development")
    auth_failure_limit: int = Field(20, ge=1, description="failed authentications per client address per window "
                                                          "before 429")
    auth_failure_window_seconds: float = Field(60.0, gt=0)
    trusted_proxies: str = Field(
        "", description="comma-separated addresses of reverse proxies whose X-Forwarded-For names the client "
                        "(`make up` passes it to uvicorn --forwarded-allow-ips); empty: the socket peer is the client")
    docs_enabled: bool | None = Field(None, description="serve /docs, /redoc and /openapi.json; empty: on unless "
                                                        "DEVOPS_ENVIRONMENT=production")
    workspace_retention_hours: float = Field(
        24.0, ge=0, description="a finished run's workspace is removed this long after the run ended")
    default_step_image: str = Field(
        "", description="the image of `run_tests`/`custom` steps that run in a container because the shell "
                        "executor is off and name neither `with.image` nor `with.template`")
    workspace_sweep_interval_seconds: float = Field(
        300.0, gt=0, description="how often each worker removes workspaces past workspace_retention_hours")
    prometheus_url: str = Field("", description="Prometheus for rollout analyses (`provider: prometheus`); "
                                                "empty: such metrics are inconclusive")
    step_log_cap_bytes: int = 2_000_000

    stream_poll_interval_seconds: float = Field(
        0.2, gt=0, le=5, description="live streams (SSE) look for new run events and log lines this often"
    )
    stream_keepalive_seconds: float = Field(
        15.0, gt=0, description="an idle live stream sends a `: keep-alive` comment this often, for proxies"
    )
    stream_gap_settle_seconds: float = Field(
        5.0, ge=0, description="a missing id below visible ones is waited for this long (a transaction still "
        "committing) before live streams pass it as an id that will never appear (rolled back)"
    )

    schedule_reconcile_on_start: bool = Field(
        True, description="compare schedules rows with Temporal Schedules when the API starts, and repair"
    )
    schedule_catchup_window_seconds: float = Field(
        300.0, description="fires missed while Temporal was down are still taken if at most this late"
    )
    schedule_trigger_wait_seconds: float = Field(
        10.0, description="how long POST /schedules/{id}/trigger waits for the run to be created"
    )
    run_outbox_interval_seconds: float = Field(
        60.0, gt=0, description="how often the API looks for pending/queued runs whose workflow was never "
        "started (the API died between writing the row and starting it) and starts or fails them"
    )
    run_outbox_grace_seconds: float = Field(
        10.0, ge=0, description="a run row is left to the request that created it for this long before the "
        "outbox reconciler starts its workflow"
    )
    database_retry_after_seconds: int = Field(
        5, ge=1, description="the Retry-After of the 503 answered while the database is unreachable"
    )

    # ---- teams and access (README "Teams and access") ----
    operator_token: str = Field(
        "", description="a bearer token for the service operator: creates accounts (POST /accounts) next to the "
                        "operator user bootstrap flags; empty: only that user")
    invitation_ttl_hours: float = Field(72.0, gt=0, description="how long an invitation (POST /users) can be accepted")
    token_rotation_grace_minutes: float = Field(
        60.0, ge=0, description="POST /tokens/{id}/rotate: the old value keeps working this long, then expires")
    smtp_host: str = Field("", description="SMTP server for approval-request emails; empty: no email")
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = Field(False, description="upgrade the SMTP connection with STARTTLS before logging in")
    smtp_from: str = Field("devops@localhost", description="the From: of notification emails")

    # ---- AI steps and integrations (README "AI steps and integrations") ----
    ai_request_timeout_seconds: float = Field(
        120.0, gt=0, description="one model call of a claude_execute step (the SDK's timeout; retries come on top)")
    ai_prompt_max_bytes: int = Field(
        200_000, gt=0, description="a rendered prompt (template preview or claude_execute) larger than this fails")
    mcp_stdio_servers: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict, description="operator-registered MCP servers started over stdio, as JSON "
                                          '{"name": ["command", "arg"...]}; an mcp_server integration names one '
                                          "(users never give a command: it would run on the worker's machine)")
    integration_poll_interval_seconds: float = Field(
        15.0, gt=0, description="how often a github_action integration asks the provider whether its run ended")
    integration_timeout_minutes: int = Field(
        60, gt=0, description="an integration execution still unfinished after this fails (github_action waits)")
    a2a_callback_max_attempts: int = Field(
        20, ge=1, description="deliveries of a linked A2A task's completion callback before it is given up "
                              "(exponential backoff from 1 s to 10 min)")

    @field_validator("old_secret_keys", "engine_allowlist", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # Rotation moves the previous plain DEVOPS_SECRET_KEY value here, so accept it as is.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [key.strip() for key in text.split(",") if key.strip()]
        return value

    @field_validator("mcp_stdio_servers", mode="before")
    @classmethod
    def _parse_json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @model_validator(mode="after")
    def _refuse_default_secret_outside_development(self) -> Settings:
        if self.environment not in ("development", "test") and self.secret_key == DEVELOPMENT_SECRET_KEY:
            raise ValueError(
                "DEVOPS_SECRET_KEY is still the development default; set a long random value "
                f"before running with DEVOPS_ENVIRONMENT={self.environment}"
            )
        if len(self.secret_key) < 16:
            raise ValueError("DEVOPS_SECRET_KEY must be at least 16 characters")
        return self

    @property
    def private_targets_allowed(self) -> bool:
        return self.allow_private_targets or self.notify_allow_private_targets

    @property
    def shell_executor_enabled(self) -> bool:
        """Shell steps run on the worker's machine: always in development, elsewhere only when the
        operator says this install is trusted single-tenant."""
        return self.environment == "development" or self.shell_executor

    @property
    def resolved_docs_enabled(self) -> bool:
        return self.environment != "production" if self.docs_enabled is None else self.docs_enabled

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'devops.db').resolve()}"

    @property
    def resolved_public_api_url(self) -> str:
        """Where users and providers reach the API (links in notifications, webhook URLs)."""
        return (self.public_api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def resolved_workspace_dir(self) -> Path:
        return (self.workspace_dir or self.data_dir / "workspaces").resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_temporal_ui_url(self) -> str:
        return (self.temporal_ui_url or f"http://127.0.0.1:{self.temporal_ui_port}").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
