"""Secrets of an account: write-only values, usable in steps as ``${{ secrets.NAME }}``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from api import errors
from api.deps import ActorDep, CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.schemas import SecretCreate, SecretPublic, SecretsPublic
from db.crypto import SecretBox
from db.models import Secret
from services import audit

router = APIRouter(prefix="/secrets", tags=["secrets"])


def _public(row: Secret) -> SecretPublic:
    return SecretPublic(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


@router.get("", response_model=SecretsPublic)
def list_secrets(session: SessionDep, caller: CurrentCaller) -> SecretsPublic:
    rows = session.scalars(select(Secret).where(Secret.account_id == caller.account_id).order_by(Secret.name)).all()
    return SecretsPublic(data=[_public(r) for r in rows], count=len(rows))


@router.put("", response_model=SecretPublic, summary="Create or replace a secret")
def put_secret(body: SecretCreate, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
               actor: ActorDep) -> SecretPublic:
    """Create or replace a secret. The value is encrypted at rest and never returned (nor audited:
    the audit log names the secret only)."""
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    row = session.scalar(select(Secret).where(Secret.account_id == caller.account_id, Secret.name == body.name))
    if row is None:
        row = Secret(account_id=caller.account_id, name=body.name, encrypted_value=box.encrypt(body.value))
        session.add(row)
        action = "secret.created"
    else:
        row.encrypted_value = box.encrypt(body.value)
        action = "secret.updated"
    audit.record(session, caller.account_id, actor, action, target_type="secret", target_id=body.name,
                 details={"name": body.name})
    session.commit()
    return _public(row)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_secret(name: str, session: SessionDep, caller: WriterCaller, actor: ActorDep) -> Response:
    """Delete a secret; steps that name it fail from now on."""
    row = session.scalar(select(Secret).where(Secret.account_id == caller.account_id, Secret.name == name))
    if row is None:
        raise errors.not_found("secret")
    session.delete(row)
    audit.record(session, caller.account_id, actor, "secret.deleted", target_type="secret", target_id=name,
                 details={"name": name})
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
