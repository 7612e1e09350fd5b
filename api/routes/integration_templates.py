"""The integration marketplace: ``/integration_templates`` (the seed's IntegrationTemplate).

An account sees its own templates and every public one; only the owner changes or deletes one
(another account's public template answers 404 to a write, as if it were not there). Installing
a template makes an instance (``POST /integration_templates/{integration_template_id}/install``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from api import errors
from api.deps import ActorDep, CurrentCaller, SessionDep, WriterCaller
from api.integration_schemas import (
    IntegrationInstall,
    IntegrationInstancePublic,
    IntegrationTemplateCreate,
    IntegrationTemplatePublic,
    IntegrationTemplateUpdate,
)
from api.pages import Page
from api.routes.integration_instances import instance_public
from db.integration_models import IntegrationTemplate
from domain.integrations import IntegrationCategory, IntegrationType
from services import integration_instances as instances
from services import integrations as services

router = APIRouter(prefix="/integration_templates", tags=["integrations"])
NOT_NULL = ("name", "slug", "description", "integration_type", "category", "version", "configuration_schema",
            "input_schema", "output_schema", "credential_requirements", "default_configuration", "is_public",
            "is_featured")


def template_public(row: IntegrationTemplate, account_id: int) -> IntegrationTemplatePublic:
    return IntegrationTemplatePublic(
        id=row.id, name=row.name, slug=row.slug, description=row.description or "",
        integration_type=row.integration_type, category=row.category, version=row.version,
        configuration_schema=row.configuration_schema or {}, input_schema=row.input_schema or {},
        output_schema=row.output_schema or {}, credential_requirements=list(row.credential_requirements or []),
        default_configuration=row.default_configuration or {}, is_public=row.is_public, is_featured=row.is_featured,
        install_count=row.install_count, usage_count=row.usage_count, owned=row.account_id == account_id,
        created_at=row.created_at, updated_at=row.updated_at)


def no_nulls(changes: dict[str, Any], fields: tuple[str, ...]) -> None:
    nulls = [name for name in fields if name in changes and changes[name] is None]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "msg": "may not be null", "type": "null"}
                                    for name in nulls])


@router.get("", response_model=Page[IntegrationTemplatePublic], summary="List integration templates")
def list_integration_templates(
        session: SessionDep, caller: CurrentCaller,
        integration_type: IntegrationType | None = None, category: IntegrationCategory | None = None,
        featured: bool | None = None, q: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0) -> Page[IntegrationTemplatePublic]:
    """The account's own templates and every public one, featured first; filter by type,
    category, featured, or a word in the name, slug or description (``q``)."""
    rows, count = services.list_templates(session, caller.account_id, integration_type=integration_type,
                                          category=category, featured=featured, q=q, limit=limit, offset=offset)
    return Page(data=[template_public(r, caller.account_id) for r in rows], count=count)


@router.post("", response_model=IntegrationTemplatePublic, status_code=status.HTTP_201_CREATED,
             summary="Create an integration template")
def create_integration_template(body: IntegrationTemplateCreate, session: SessionDep, caller: WriterCaller,
                                actor: ActorDep) -> IntegrationTemplatePublic:
    """A template: its type, category, JSON Schemas (each checked: 422 with the pointer of the
    problem), credential requirements and default configuration (valid against the configuration
    schema). 409 when the account has the slug already."""
    row = services.create_template(session, caller.account_id, actor, body.model_dump(mode="json"))
    return template_public(row, caller.account_id)


@router.get("/{integration_template_id}", response_model=IntegrationTemplatePublic,
            summary="Show an integration template")
def show_integration_template(integration_template_id: int, session: SessionDep,
                              caller: CurrentCaller) -> IntegrationTemplatePublic:
    """One template of the account, or a public one."""
    return template_public(services.visible_template(session, caller.account_id, integration_template_id),
                           caller.account_id)


@router.patch("/{integration_template_id}", response_model=IntegrationTemplatePublic,
              summary="Change an integration template")
def update_integration_template(integration_template_id: int, body: IntegrationTemplateUpdate, session: SessionDep,
                                caller: WriterCaller, actor: ActorDep) -> IntegrationTemplatePublic:
    """Change the fields sent (checked as on create). Only the owning account: 404 otherwise."""
    changes = body.model_dump(mode="json", exclude_unset=True)
    no_nulls(changes, NOT_NULL)
    row = services.update_template(session, caller.account_id, actor, integration_template_id, changes)
    return template_public(row, caller.account_id)


@router.delete("/{integration_template_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an integration template")
def delete_integration_template(integration_template_id: int, session: SessionDep, caller: WriterCaller,
                                actor: ActorDep) -> Response:
    """Delete a template of the account; 409 while any instance of it is installed."""
    services.delete_template(session, caller.account_id, actor, integration_template_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{integration_template_id}/install", response_model=IntegrationInstancePublic,
             status_code=status.HTTP_201_CREATED, summary="Install an integration template")
def install_integration_template(integration_template_id: int, body: IntegrationInstall, session: SessionDep,
                                 caller: WriterCaller, actor: ActorDep) -> IntegrationInstancePublic:
    """Make an instance of the template (as ``POST /integration_instances`` with its id)."""
    services.visible_template(session, caller.account_id, integration_template_id)  # 404 before 422
    row = instances.create_instance(session, caller.account_id, actor, template_id=integration_template_id,
                                    name=body.name, configuration=body.configuration,
                                    credential_id=body.credential_id)
    return instance_public(row)
