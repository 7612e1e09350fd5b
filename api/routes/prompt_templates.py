"""Prompt templates (the seed's PromptTemplate): versioned Jinja2 prompts rendered in a sandbox,
their variables checked against a JSON Schema, and a render preview. See ``services.prompts``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.ai_schemas import (
    PromptRenderPublic,
    PromptRenderRequest,
    PromptTemplateCreate,
    PromptTemplatePublic,
    PromptTemplateUpdate,
    PromptTemplateVersionCreate,
    PromptTemplateVersionPublic,
)
from api.deps import ActorDep, CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.pages import Page
from db.ai_models import PromptTemplate, PromptTemplateVersion
from services import prompts as service

router = APIRouter(prefix="/prompt_templates", tags=["ai"])

Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0)]


def version_public(row: PromptTemplateVersion) -> PromptTemplateVersionPublic:
    return PromptTemplateVersionPublic(version=row.version, body=row.body, system=row.system,
                                       variables_schema=row.variables_schema or {},
                                       created_by_user_id=row.created_by_user_id, created_at=row.created_at)


def template_public(row: PromptTemplate, version: PromptTemplateVersion) -> PromptTemplatePublic:
    return PromptTemplatePublic(id=row.id, name=row.name, description=row.description, category=row.category,
                                current_version=row.current_version, body=version.body, system=version.system,
                                variables_schema=version.variables_schema or {}, created_at=row.created_at,
                                updated_at=row.updated_at)


@router.get("", response_model=Page[PromptTemplatePublic], summary="List prompt templates")
def list_prompt_templates(session: SessionDep, caller: CurrentCaller, category: str | None = None,
                          limit: Limit = 50, offset: Offset = 0) -> Page[PromptTemplatePublic]:
    """The account's prompt templates by name, each with its current version's text."""
    rows, count = service.list_templates(session, caller.account_id, category=category, limit=limit, offset=offset)
    return Page[PromptTemplatePublic](data=[template_public(r, service.get_version(session, r)) for r in rows],
                                      count=count)


@router.post("", response_model=PromptTemplatePublic, status_code=status.HTTP_201_CREATED,
             summary="Create a prompt template")
def create_prompt_template(body: PromptTemplateCreate, session: SessionDep, caller: WriterCaller,
                           actor: ActorDep) -> PromptTemplatePublic:
    """Create a template with its version 1. A syntax error in ``body``/``system`` is 422 with
    the line; an invalid ``variables_schema`` is 422 with the pointer."""
    row = service.create_template(session, caller.account_id, actor,
                                  body.model_dump(include={"name", "description", "category"}),
                                  body.body, body.system, body.variables_schema)
    session.commit()
    return template_public(row, service.get_version(session, row))


@router.get("/{template_id}", response_model=PromptTemplatePublic, summary="Show a prompt template")
def show_prompt_template(template_id: int, session: SessionDep, caller: CurrentCaller) -> PromptTemplatePublic:
    """A template with its current version's body, system and variables schema."""
    row = service.get_template(session, caller.account_id, template_id)
    return template_public(row, service.get_version(session, row))


@router.patch("/{template_id}", response_model=PromptTemplatePublic, summary="Change a prompt template's metadata")
def update_prompt_template(template_id: int, body: PromptTemplateUpdate, session: SessionDep, caller: WriterCaller,
                           actor: ActorDep) -> PromptTemplatePublic:
    """Name, description, category; the text changes by a new version."""
    row = service.update_template(session, caller.account_id, actor, template_id,
                                  body.model_dump(include=body.model_fields_set))
    session.commit()
    return template_public(row, service.get_version(session, row))


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a prompt template")
def delete_prompt_template(template_id: int, session: SessionDep, caller: WriterCaller, actor: ActorDep) -> Response:
    """Delete a template and all its versions; steps naming it fail from now on."""
    service.delete_template(session, caller.account_id, actor, template_id)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{template_id}/versions", response_model=PromptTemplateVersionPublic,
             status_code=status.HTTP_201_CREATED, summary="Add a prompt template version")
def create_prompt_template_version(template_id: int, body: PromptTemplateVersionCreate, session: SessionDep,
                                   caller: WriterCaller, actor: ActorDep) -> PromptTemplateVersionPublic:
    """A new immutable version, which becomes the current one."""
    version = service.add_version(session, caller.account_id, actor, template_id, body.body, body.system,
                                  body.variables_schema)
    session.commit()
    return version_public(version)


@router.get("/{template_id}/versions", response_model=Page[PromptTemplateVersionPublic],
            summary="List a prompt template's versions")
def list_prompt_template_versions(template_id: int, session: SessionDep, caller: CurrentCaller, limit: Limit = 50,
                                  offset: Offset = 0) -> Page[PromptTemplateVersionPublic]:
    """Newest first."""
    row = service.get_template(session, caller.account_id, template_id)
    versions, count = service.list_versions(session, row, limit=limit, offset=offset)
    return Page[PromptTemplateVersionPublic](data=[version_public(v) for v in versions], count=count)


@router.post("/{template_id}/render", response_model=PromptRenderPublic, summary="Preview a rendered prompt")
def render_prompt_template(template_id: int, body: PromptRenderRequest, session: SessionDep, caller: CurrentCaller,
                           settings: SettingsDep) -> PromptRenderPublic:
    """Render a version (default: current) with ``variables``: 422 ending with the JSON pointer
    when they break the schema, 422 with the line for a template error or a refused construct."""
    row = service.get_template(session, caller.account_id, template_id)
    version = service.get_version(session, row, body.version)
    rendered = service.render_version(version, body.variables, max_bytes=settings.ai_prompt_max_bytes)
    return PromptRenderPublic(rendered=rendered.rendered, system=rendered.system, version=rendered.version,
                              bytes=len(rendered.rendered.encode()))
