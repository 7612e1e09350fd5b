"""Secrets of an account: write-only values, usable in steps as ``${{ secrets.NAME }}``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.schemas import SecretCreate, SecretPublic, SecretsPublic
from db.crypto import SecretBox
from db.models import Secret

router = APIRouter(prefix="/secrets", tags=["secrets"])


def _public(row: Secret) -> SecretPublic:
    return SecretPublic(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


@router.get("", response_model=SecretsPublic)
def list_secrets(session: SessionDep, caller: CurrentCaller) -> SecretsPublic:
    rows = session.scalars(select(Secret).where(Secret.account_id == caller.account_id).order_by(Secret.name)).all()
    return SecretsPublic(data=[_public(r) for r in rows], count=len(rows))


@router.put("", response_model=SecretPublic, summary="Create or replace a secret")
def put_secret(body: SecretCreate, session: SessionDep, caller: WriterCaller, settings: SettingsDep) -> SecretPublic:
    """Create or replace a secret. The value is encrypted at rest and never returned."""
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    row = session.scalar(select(Secret).where(Secret.account_id == caller.account_id, Secret.name == body.name))
    if row is None:
        row = Secret(account_id=caller.account_id, name=body.name, encrypted_value=box.encrypt(body.value))
        session.add(row)
    else:
        row.encrypted_value = box.encrypt(body.value)
    session.commit()
    return _public(row)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_secret(name: str, session: SessionDep, caller: WriterCaller) -> Response:
    row = session.scalar(select(Secret).where(Secret.account_id == caller.account_id, Secret.name == name))
    if row is None:
        raise errors.not_found("secret")
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
