"""The FastAPI application: ``uvicorn api.main:app``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from temporalio.client import Client

from adapters.temporal import TemporalGateway
from api import database_errors, errors, openapi, safe_parse, security, ui
from api.routes import (
    accounts,
    ai_configs,
    ai_usage,
    approvals,
    audit_events,
    container_account,
    container_templates,
    containers,
    deployments,
    docker,
    health,
    integration_credentials,
    integration_executions,
    integration_instances,
    integration_templates,
    invitations,
    missions,
    oauth,
    pipeline_runs,
    pipeline_templates,
    pipelines,
    prompt_templates,
    providers,
    repositories,
    repository_links,
    run_streams,
    schedules,
    secrets,
    swarm,
    tokens,
    users,
    webhooks,
)
from api.streams import StreamHub
from db.session import make_engine, make_session_factory
from services import integration_outbox, run_outbox
from services import schedules as schedule_service
from settings import Settings, get_settings

API_PREFIX = "/api/v1/devops"


def create_app(settings: Settings | None = None, temporal_client: Client | None = None) -> FastAPI:
    """Build the app. Tests pass their own settings and an already connected client."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.resolved_database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_session_factory(engine)
        app.state.temporal = TemporalGateway(settings, temporal_client)
        app.state.streams = StreamHub(settings, engine, app.state.sessions)
        reconcile = None
        if settings.schedule_reconcile_on_start:
            # In the background: the API answers while Temporal is slow or down.
            reconcile = asyncio.create_task(
                schedule_service.reconcile_on_start(app.state.temporal, app.state.sessions, settings))
        app.state.schedule_reconcile = reconcile
        # start outbox: runs whose workflow an earlier (killed) API process never started
        app.state.run_outbox = asyncio.create_task(
            run_outbox.run_forever(app.state.temporal, app.state.sessions, settings))
        # the same for integration executions started through the API (issue 14)
        app.state.integration_outbox = asyncio.create_task(
            integration_outbox.run_forever(app.state.temporal, app.state.sessions, settings))
        yield
        app.state.integration_outbox.cancel()
        if reconcile is not None and not reconcile.done():
            reconcile.cancel()
        app.state.run_outbox.cancel()
        engine.dispose()

    app = FastAPI(
        title="DevOps orchestration API",
        version="0.1.0",
        description="CI/CD pipelines run durably on Temporal. Authenticate with `Authorization: Bearer <API token>`.",
        lifespan=lifespan,
        # off in production unless DEVOPS_DOCS_ENABLED; security.install serves /docs and /redoc with their CSP
        openapi_url="/openapi.json" if settings.resolved_docs_enabled else None,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,  # operationId = the route function's name
    )
    @app.exception_handler(RequestValidationError)
    async def validation_failed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each rejected `input`: for a secret value, token or password
        # sent in the wrong shape that would put it in the answer (and in logs of proxies).
        problems = [{k: v for k, v in problem.items() if k != "input"} for problem in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(problems)})

    errors.install(app)  # domain errors (NotFound, Conflict, Invalid, ...) -> their status codes

    devops = APIRouter(prefix=API_PREFIX)
    devops.include_router(pipelines.router)
    # before pipeline_runs: `/pipeline_runs/stream` would otherwise match `/pipeline_runs/{run_id}`
    devops.include_router(run_streams.router)
    devops.include_router(pipeline_runs.router)
    devops.include_router(pipeline_templates.router)
    devops.include_router(secrets.router)
    devops.include_router(approvals.router)
    devops.include_router(audit_events.router)
    devops.include_router(users.router)  # /users/me is declared before /users/{user_id}
    devops.include_router(invitations.router)
    devops.include_router(tokens.router)
    devops.include_router(accounts.router)
    devops.include_router(schedules.router)
    devops.include_router(oauth.router)  # /providers/oauth/callback and /providers/{id}/oauth/authorize
    devops.include_router(providers.router)
    devops.include_router(repositories.router)
    devops.include_router(repository_links.router)
    devops.include_router(webhooks.router)
    devops.include_router(docker.router)
    devops.include_router(deployments.router)  # before swarm: /swarm/deployments is the rollouts'
    devops.include_router(swarm.router)
    devops.include_router(container_templates.router)
    devops.include_router(container_account.router)
    devops.include_router(containers.router)
    devops.include_router(ai_configs.router)
    devops.include_router(prompt_templates.router)
    devops.include_router(ai_usage.router)
    devops.include_router(integration_templates.router)
    devops.include_router(integration_credentials.router)
    devops.include_router(integration_instances.router)
    devops.include_router(integration_executions.router)
    devops.include_router(missions.router)
    app.include_router(devops)
    app.include_router(health.router)
    ui.install(app)  # the dashboard at /ui: static files and the session cookie (out of the schema)
    openapi.document_errors(app)  # 401/403/404/409/429/503 with their model, by rule (api/openapi.py)
    # operation id -> full path template: the scope each route needs is decided by its path (api.deps)
    app.state.route_templates = openapi.route_templates(app)
    openapi.document_scopes(app)  # x-required-scope and a 403 on every operation taking a token
    security.install(app, settings)  # query-token masking, failed-auth limit, headers, docs
    database_errors.install(app, settings)  # database unreachable: 503 + Retry-After, not 500
    safe_parse.install(app)  # bounded bodies, documents, path and query values (after all routes)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app` builds the app on first access, not at import time.
    if name == "app":
        return create_app()
    raise AttributeError(name)
