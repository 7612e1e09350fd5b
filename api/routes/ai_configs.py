"""AI configs (the seed's AiConfig): the model, key, endpoint and token budgets a
``claude_execute`` step uses. The key is write-only (``has_api_key``); see ``services.ai_configs``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.ai_schemas import AiConfigCreate, AiConfigPublic, AiConfigUpdate
from api.deps import ActorDep, CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.pages import Page
from db.ai_models import AiConfig
from services import ai_configs as service

router = APIRouter(prefix="/ai_configs", tags=["ai"])


def ai_config_public(row: AiConfig) -> AiConfigPublic:
    return AiConfigPublic(
        id=row.id, name=row.name, provider=row.provider, model=row.model,
        has_api_key=row.encrypted_api_key is not None, base_url=row.base_url, max_tokens=row.max_tokens,
        temperature=row.temperature, run_token_budget=row.run_token_budget,
        monthly_token_budget=row.monthly_token_budget, input_cost_per_mtok=row.input_cost_per_mtok,
        output_cost_per_mtok=row.output_cost_per_mtok, is_default=row.is_default, created_at=row.created_at,
        updated_at=row.updated_at)


@router.get("", response_model=Page[AiConfigPublic], summary="List AI configs")
def list_ai_configs(session: SessionDep, caller: CurrentCaller, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    offset: Annotated[int, Query(ge=0)] = 0) -> Page[AiConfigPublic]:
    """The account's AI configs by name (keys never shown: ``has_api_key``)."""
    rows, count = service.list_configs(session, caller.account_id, limit=limit, offset=offset)
    return Page[AiConfigPublic](data=[ai_config_public(r) for r in rows], count=count)


@router.post("", response_model=AiConfigPublic, status_code=status.HTTP_201_CREATED, summary="Create an AI config")
def create_ai_config(body: AiConfigCreate, session: SessionDep, caller: WriterCaller, actor: ActorDep,
                     settings: SettingsDep) -> AiConfigPublic:
    """Create a config. ``openai_compatible`` needs ``base_url``; an internal ``base_url`` host is
    422 unless private targets are allowed; ``is_default`` clears the flag on the others."""
    values = body.model_dump(exclude={"api_key"})
    row = service.create_config(session, caller.account_id, actor, values, body.api_key, settings)
    session.commit()
    return ai_config_public(row)


@router.get("/{ai_config_id}", response_model=AiConfigPublic, summary="Show an AI config")
def show_ai_config(ai_config_id: int, session: SessionDep, caller: CurrentCaller) -> AiConfigPublic:
    """One config of the account."""
    return ai_config_public(service.get_config(session, caller.account_id, ai_config_id))


@router.patch("/{ai_config_id}", response_model=AiConfigPublic, summary="Change an AI config")
def update_ai_config(ai_config_id: int, body: AiConfigUpdate, session: SessionDep, caller: WriterCaller,
                     actor: ActorDep, settings: SettingsDep) -> AiConfigPublic:
    """Only the fields sent change; ``api_key: null`` removes the key."""
    changes = body.model_dump(include=body.model_fields_set)
    row = service.update_config(session, caller.account_id, actor, ai_config_id, changes, settings)
    session.commit()
    session.refresh(row)
    return ai_config_public(row)


@router.delete("/{ai_config_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an AI config")
def delete_ai_config(ai_config_id: int, session: SessionDep, caller: WriterCaller, actor: ActorDep) -> Response:
    """Delete a config; its usage rows stay (without the link). Steps naming it fail from now on."""
    service.delete_config(session, caller.account_id, actor, ai_config_id)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
