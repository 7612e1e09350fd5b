"""``/integration_credentials``: named secret fields for integrations (a token, a signing
secret). Values are encrypted at rest as one object and never returned, audited or logged: an
answer names the fields only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import ActorDep, CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.integration_schemas import (
    IntegrationCredentialCreate,
    IntegrationCredentialPublic,
    IntegrationCredentialUpdate,
)
from api.pages import Page
from api.routes.integration_templates import no_nulls
from db.integration_models import IntegrationCredential
from services import integrations as services

router = APIRouter(prefix="/integration_credentials", tags=["integrations"])


def credential_public(row: IntegrationCredential) -> IntegrationCredentialPublic:
    return IntegrationCredentialPublic(id=row.id, name=row.name, credential_type=row.credential_type,
                                       field_names=list(row.field_names or []), created_at=row.created_at,
                                       updated_at=row.updated_at)


@router.get("", response_model=Page[IntegrationCredentialPublic], summary="List integration credentials")
def list_integration_credentials(session: SessionDep, caller: CurrentCaller,
                                 limit: Annotated[int, Query(ge=1, le=200)] = 50,
                                 offset: Annotated[int, Query(ge=0)] = 0) -> Page[IntegrationCredentialPublic]:
    """The account's credentials by name (field names only)."""
    rows, count = services.list_credentials(session, caller.account_id, limit=limit, offset=offset)
    return Page(data=[credential_public(r) for r in rows], count=count)


@router.post("", response_model=IntegrationCredentialPublic, status_code=status.HTTP_201_CREATED,
             summary="Create an integration credential")
def create_integration_credential(body: IntegrationCredentialCreate, session: SessionDep, caller: WriterCaller,
                                  settings: SettingsDep, actor: ActorDep) -> IntegrationCredentialPublic:
    """Store the fields encrypted; 409 when the account has the name already."""
    row = services.create_credential(session, caller.account_id, actor, settings, name=body.name,
                                     credential_type=body.credential_type, fields=body.fields)
    return credential_public(row)


@router.get("/{credential_id}", response_model=IntegrationCredentialPublic, summary="Show an integration credential")
def show_integration_credential(credential_id: int, session: SessionDep,
                                caller: CurrentCaller) -> IntegrationCredentialPublic:
    """Its name, type and field names (never the values)."""
    return credential_public(services.owned_credential(session, caller.account_id, credential_id))


@router.patch("/{credential_id}", response_model=IntegrationCredentialPublic,
              summary="Change an integration credential")
def update_integration_credential(credential_id: int, body: IntegrationCredentialUpdate, session: SessionDep,
                                  caller: WriterCaller, settings: SettingsDep,
                                  actor: ActorDep) -> IntegrationCredentialPublic:
    """Rename it, or replace all its fields (``fields``)."""
    changes = body.model_dump(exclude_unset=True)
    no_nulls(changes, ("name", "credential_type", "fields"))
    row = services.update_credential(session, caller.account_id, actor, settings, credential_id, changes)
    return credential_public(row)


@router.delete("/{credential_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an integration credential")
def delete_integration_credential(credential_id: int, session: SessionDep, caller: WriterCaller,
                                  actor: ActorDep) -> Response:
    """Delete it; instances that used it are left without a credential."""
    services.delete_credential(session, caller.account_id, actor, credential_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
