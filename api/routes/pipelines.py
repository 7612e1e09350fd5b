"""Pipelines: CRUD, trigger, clone, export and import (the seed's PipelinesController)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from anyio import from_thread
from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import func, select

from api import errors, idempotency, safe_parse
from api.deps import CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.pipeline_views import pipeline_public, validated
from api.run_views import run_public, start_and_describe
from api.schemas import (
    CloneRequest,
    PipelinePublic,
    PipelineRunPublic,
    PipelinesPublic,
    TriggerRequest,
)
from db.models import Pipeline, PipelineRun
from domain.pipeline_document import (
    PipelineDocument,
    dump_yaml,
    normalized,
    parse_yaml,
)
from domain.step_types import FINISHED_RUN_STATUSES
from services import a2a
from services import runs as services
from services import schedules as schedule_service

router = APIRouter(prefix="/pipelines", tags=["pipelines"])

EXAMPLE_DOCUMENT = {
    "name": "build-and-test",
    "pipeline_type": "custom",
    "allow_concurrent": False,
    "timeout_minutes": 30,
    "inputs": {"greeting": {"type": "string", "default": "hello"}},
    "triggers": {"manual": {}},
    "steps": [
        {"id": "hello", "type": "run_tests",
         "with": {"command": 'echo "result=$GREETING" >> "$DEVOPS_OUTPUT"',
                  "env": {"GREETING": "${{ inputs.greeting }}"}}},
        {"id": "check", "type": "run_tests", "if": "${{ steps.hello.outputs.result == 'hello' }}",
         "with": {"command": 'test "$R" = hello', "env": {"R": "${{ steps.hello.outputs.result }}"}}},
    ],
}


def _editable(session: SessionDep, caller: CurrentCaller, pipeline_id: int) -> Pipeline:
    pipeline = services.get_pipeline(session, caller.account_id, pipeline_id)
    if pipeline.is_system:
        raise errors.conflict("this is a system pipeline: it cannot be changed or deleted; clone it instead")
    return pipeline


@router.get("", response_model=PipelinesPublic)
def list_pipelines(session: SessionDep, caller: CurrentCaller,
                   pipeline_type: Literal["review", "implement", "security", "deploy", "custom"] | None = None,
                   is_active: bool | None = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> PipelinesPublic:
    query = select(Pipeline).where(Pipeline.account_id == caller.account_id)
    if pipeline_type is not None:
        query = query.where(Pipeline.pipeline_type == pipeline_type)
    if is_active is not None:
        query = query.where(Pipeline.is_active == is_active)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Pipeline.id).limit(limit).offset(offset)).all()
    return PipelinesPublic(data=[pipeline_public(p) for p in rows], count=count)


@router.post("", response_model=PipelinePublic, status_code=status.HTTP_201_CREATED)
def create_pipeline(session: SessionDep, caller: WriterCaller, temporal: TemporalDep, settings: SettingsDep,
                    document: Annotated[dict[str, Any], Body(examples=[EXAMPLE_DOCUMENT])]) -> PipelinePublic:
    """Create a pipeline from its document (JSON). Everything is validated before saving."""
    pipeline = services.apply_document(session, caller.account_id, validated(document, settings=settings))
    schedule_service.sync_pipeline_schedules(session, temporal, settings, pipeline)
    session.commit()
    return pipeline_public(pipeline)


def _document_of(request: Request, default_type: str) -> Any:
    """The request's YAML or JSON document, parsed with the bounded parsers (api.safe_parse)."""
    raw = from_thread.run(request.body)  # the body is read on the event loop
    content_type = request.headers.get("content-type", default_type).split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.unprocessable([{"loc": ["body"], "type": "encoding", "msg": "the document must be UTF-8"}]) from None
    # Bounded parsers (api.safe_parse), in this worker thread: a refused document (alias bomb, too
    # deep, too big, NUL, 64-bit overflow) raises DocumentRefused, answered 413/422 by its handler.
    if content_type in ("application/json", "text/json"):
        try:
            data = safe_parse.loads_json(text)
        except json.JSONDecodeError as exc:
            raise errors.unprocessable([{"loc": ["body"], "type": "json_invalid",
                                         "msg": f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"}]) from None
    elif content_type in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"):
        try:
            data = parse_yaml(text)
        except safe_parse.DocumentRefused:
            raise
        except ValueError as exc:
            raise errors.unprocessable([{"loc": ["body"], "type": "yaml_invalid", "msg": str(exc)}]) from None
    else:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the document as application/yaml or application/json")
    return data


@router.post(
    "/import", response_model=PipelinePublic, status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": {"content": {
        "application/yaml": {"schema": {"type": "string"}, "example": dump_yaml(EXAMPLE_DOCUMENT)},
        "application/json": {"schema": {"type": "object"}, "example": EXAMPLE_DOCUMENT},
    }, "required": True}},
    responses={413: {"description": "the document is too large or too deep (api.safe_parse limits)"},
               415: {"description": "neither YAML nor JSON"}},
)
def import_pipeline(request: Request, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                    settings: SettingsDep) -> PipelinePublic:
    """Create a pipeline from a YAML (``Content-Type: application/yaml``) or JSON document."""
    data = _document_of(request, "application/yaml")
    document = validated(data, settings=settings)
    pipeline = services.apply_document(session, caller.account_id, document)
    schedule_service.sync_pipeline_schedules(session, temporal, settings, pipeline)
    session.commit()
    return pipeline_public(pipeline)


@router.get("/{pipeline_id}", response_model=PipelinePublic)
def show_pipeline(pipeline_id: int, session: SessionDep, caller: CurrentCaller) -> PipelinePublic:
    return pipeline_public(services.get_pipeline(session, caller.account_id, pipeline_id))


DOCUMENT_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object"}, "example": EXAMPLE_DOCUMENT},
    "application/yaml": {"schema": {"type": "string"}, "example": dump_yaml(EXAMPLE_DOCUMENT)},
}, "required": True}}


@router.put("/{pipeline_id}", response_model=PipelinePublic, openapi_extra=DOCUMENT_BODY,
            responses={413: {"description": "the document is too large or too deep (api.safe_parse limits)"},
                       415: {"description": "neither JSON nor YAML"}})
def replace_pipeline(pipeline_id: int, request: Request, session: SessionDep, caller: WriterCaller,
                     temporal: TemporalDep, settings: SettingsDep) -> PipelinePublic:
    """Replace the whole definition with a new document: JSON, or YAML with
    ``Content-Type: application/yaml`` (as ``GET .../export`` gives it)."""
    pipeline = _editable(session, caller, pipeline_id)
    document = validated(_document_of(request, "application/json"), settings=settings)
    services.apply_document(session, caller.account_id, document, pipeline)
    schedule_service.sync_pipeline_schedules(session, temporal, settings, pipeline)
    session.commit()
    return pipeline_public(pipeline)


@router.patch("/{pipeline_id}", response_model=PipelinePublic)
def update_pipeline(pipeline_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                    settings: SettingsDep,
                    changes: Annotated[dict[str, Any], Body(examples=[{"is_active": False}])]) -> PipelinePublic:
    """Change some top-level fields of the document (e.g. ``is_active``, ``description``,
    ``steps``); the result is validated as a whole."""
    pipeline = _editable(session, caller, pipeline_id)
    merged = {**services.export_document(pipeline), **changes}
    services.apply_document(session, caller.account_id, validated(merged, settings=settings), pipeline)
    schedule_service.sync_pipeline_schedules(session, temporal, settings, pipeline)
    session.commit()
    return pipeline_public(pipeline)


@router.delete("/{pipeline_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_pipeline(pipeline_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Response:
    pipeline = _editable(session, caller, pipeline_id)
    # A live run's workflow still writes its rows; deleting them under it would leave it failing.
    unfinished = session.scalars(
        select(PipelineRun.id).where(PipelineRun.pipeline_id == pipeline.id,
                                     PipelineRun.status.not_in(FINISHED_RUN_STATUSES)).order_by(PipelineRun.id)
    ).all()
    if unfinished:
        raise errors.conflict(f"the pipeline has unfinished runs ({', '.join(map(str, unfinished))}); "
                              "cancel them or let them finish before deleting it")
    schedule_service.delete_pipeline_schedules(session, temporal, pipeline)  # rows cascade with the pipeline
    session.delete(pipeline)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{pipeline_id}/export", responses={200: {"content": {"application/yaml": {}, "application/json": {}}}})
def export_pipeline(pipeline_id: int, session: SessionDep, caller: CurrentCaller,
                    format: Annotated[str, Query(pattern="^(yaml|json)$")] = "yaml") -> Response:
    """The pipeline document; importing it again gives the same pipeline."""
    document = services.export_document(services.get_pipeline(session, caller.account_id, pipeline_id))
    try:
        # PostgreSQL's JSONB reorders keys; the normalized form puts them back in document order.
        document = normalized(PipelineDocument.model_validate(document))
    except ValidationError:
        pass  # a stored definition that no longer validates is still exported as stored
    if format == "json":
        return Response(json.dumps(document, indent=2), media_type="application/json")
    return Response(dump_yaml(document), media_type="application/yaml")


@router.post("/{pipeline_id}/clone", response_model=PipelinePublic, status_code=status.HTTP_201_CREATED)
def clone_pipeline(pipeline_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                   settings: SettingsDep, body: CloneRequest | None = None) -> PipelinePublic:
    """A copy in the same account (system pipelines too); the copy is never a system pipeline."""
    source = services.get_pipeline(session, caller.account_id, pipeline_id)
    body = body or CloneRequest()
    document = services.export_document(source)
    document["name"] = body.name or f"{source.name} (copy)"
    slug = body.slug
    if slug is None:
        base, n = f"{source.slug}-copy"[:90], 1
        slug = base
        while session.scalar(select(Pipeline.id).where(Pipeline.account_id == caller.account_id,
                                                       Pipeline.slug == slug)) is not None:
            n += 1
            slug = f"{base}-{n}"
    document["slug"] = slug
    pipeline = services.apply_document(session, caller.account_id, validated(document, settings=settings))
    schedule_service.sync_pipeline_schedules(session, temporal, settings, pipeline)
    session.commit()
    return pipeline_public(pipeline)


@router.post("/{pipeline_id}/trigger", response_model=PipelineRunPublic, status_code=status.HTTP_201_CREATED)
def trigger_pipeline(pipeline_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                     settings: SettingsDep, request: Request, response: Response,
                     body: TriggerRequest | None = None,
                     idempotency_key: idempotency.KeyHeader = None) -> PipelineRunPublic:
    """Start a run now (manual / workflow_dispatch). Inputs are checked against the
    pipeline's declared inputs; nothing is created when they are wrong. With an
    ``Idempotency-Key`` the same request again within 24 h answers the first run (see
    api/idempotency.py), never a second one."""
    body = body or TriggerRequest()
    pipeline = services.get_pipeline(session, caller.account_id, pipeline_id)
    idem = idempotency.for_request(session, request, idempotency_key, account_id=caller.account_id,
                                   scope=f"pipelines.trigger:{pipeline.id}", resource_type="pipeline_run",
                                   body=body.model_dump(mode="json", exclude_unset=True))

    def render(run_id: int) -> PipelineRunPublic:
        return run_public(services.get_run(session, caller.account_id, run_id), temporal)

    if idem is not None and (found := idem.existing()) is not None:
        return idempotency.replay(response, found, render)
    if not pipeline.is_active:
        raise errors.conflict("this pipeline is inactive; set is_active to true to run it")
    if idem is not None and not idem.claim():  # a concurrent request with this key won
        return idempotency.replay(response, idem.wait_existing(), render)
    a2a.check_link(session, settings, caller.account_id, callback_url=body.callback_url,
                   callback_secret=body.callback_secret)
    run = services.create_run(session, pipeline, trigger_type=body.trigger_type, inputs=body.inputs,
                              trigger_context=body.context, user_id=caller.user_id)
    a2a.link_run(run, a2a_task_id=body.a2a_task_id, callback_url=body.callback_url,
                 callback_secret=body.callback_secret)
    if idem is not None:
        idem.attach(run.id)
    session.commit()
    return start_and_describe(session, temporal, settings, run)

