"""Integration templates (the marketplace) and credentials of an account.

A template is owned by one account; ``is_public`` lists it to every account, read-only: a write
by another account answers 404 as if it did not exist. Its three JSON Schemas are checked on
every write, and ``default_configuration`` against ``configuration_schema``. A credential's
fields are encrypted together as one JSON object; only the field names are ever shown or audited.
Instances and executions are in ``services.integration_instances``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from db.crypto import SecretBox
from db.integration_models import IntegrationCredential, IntegrationInstance, IntegrationTemplate
from domain import errors
from domain.json_schemas import check_schema, validate
from services import audit
from settings import Settings

SCHEMA_FIELDS = ("configuration_schema", "input_schema", "output_schema")
TEMPLATE_FIELDS = ("name", "slug", "description", "integration_type", "category", "version", *SCHEMA_FIELDS,
                   "credential_requirements", "default_configuration", "is_public", "is_featured")


def box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key, settings.old_secret_keys)


# ---- templates ---------------------------------------------------------------------------------------


def list_templates(session: Session, account_id: int, *, integration_type: str | None = None,
                   category: str | None = None, featured: bool | None = None, q: str | None = None,
                   limit: int = 50, offset: int = 0) -> tuple[list[IntegrationTemplate], int]:
    """The account's own templates and every public one, featured first, then by name."""
    query = select(IntegrationTemplate).where(or_(IntegrationTemplate.account_id == account_id,
                                                  IntegrationTemplate.is_public.is_(True)))
    if integration_type:
        query = query.where(IntegrationTemplate.integration_type == integration_type)
    if category:
        query = query.where(IntegrationTemplate.category == category)
    if featured is not None:
        query = query.where(IntegrationTemplate.is_featured.is_(featured))
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(or_(func.lower(IntegrationTemplate.name).like(pattern),
                                func.lower(IntegrationTemplate.description).like(pattern),
                                func.lower(IntegrationTemplate.slug).like(pattern)))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IntegrationTemplate.is_featured.desc(), IntegrationTemplate.name,
                                          IntegrationTemplate.id).limit(limit).offset(offset)).all()
    return list(rows), count


def visible_template(session: Session, account_id: int, template_id: int) -> IntegrationTemplate:
    """A template the account may read (its own, or a public one); else 404."""
    row = session.scalar(select(IntegrationTemplate).where(
        IntegrationTemplate.id == template_id,
        or_(IntegrationTemplate.account_id == account_id, IntegrationTemplate.is_public.is_(True))))
    if row is None:
        raise errors.not_found("integration template")
    return row


def owned_template(session: Session, account_id: int, template_id: int) -> IntegrationTemplate:
    """A template the account may change: its own only (another's public one is 'not found')."""
    row = session.scalar(select(IntegrationTemplate).where(IntegrationTemplate.id == template_id,
                                                           IntegrationTemplate.account_id == account_id))
    if row is None:
        raise errors.not_found("integration template")
    return row


def _check_template(values: dict[str, Any]) -> None:
    for name in SCHEMA_FIELDS:
        check_schema(values.get(name) or {}, ["body", name])
    validate(values.get("default_configuration") or {}, values.get("configuration_schema") or {},
             ["body", "default_configuration"])


def _slug_taken(session: Session, account_id: int, slug: str, other_than: int | None = None) -> bool:
    query = select(IntegrationTemplate.id).where(IntegrationTemplate.account_id == account_id,
                                                 IntegrationTemplate.slug == slug)
    if other_than is not None:
        query = query.where(IntegrationTemplate.id != other_than)
    return session.scalar(query) is not None


def create_template(session: Session, account_id: int, actor: audit.Actor, values: dict[str, Any]) -> IntegrationTemplate:
    _check_template(values)
    if _slug_taken(session, account_id, values["slug"]):
        raise errors.conflict(f"the account already has an integration template with slug {values['slug']!r}")
    row = IntegrationTemplate(account_id=account_id, **{k: v for k, v in values.items() if k in TEMPLATE_FIELDS})
    session.add(row)
    session.flush()
    audit.record(session, account_id, actor, "integration_template.created", target_type="integration_template",
                 target_id=row.id, details={"slug": row.slug, "integration_type": row.integration_type})
    session.commit()
    return row


def update_template(session: Session, account_id: int, actor: audit.Actor, template_id: int,
                    changes: dict[str, Any]) -> IntegrationTemplate:
    row = owned_template(session, account_id, template_id)
    merged = {name: getattr(row, name) for name in TEMPLATE_FIELDS} | changes
    _check_template(merged)
    if "slug" in changes and _slug_taken(session, account_id, changes["slug"], other_than=row.id):
        raise errors.conflict(f"the account already has an integration template with slug {changes['slug']!r}")
    for name, value in changes.items():
        setattr(row, name, value)
    audit.record(session, account_id, actor, "integration_template.updated", target_type="integration_template",
                 target_id=row.id, details={"fields": sorted(changes)})
    session.commit()
    return row


def delete_template(session: Session, account_id: int, actor: audit.Actor, template_id: int) -> None:
    row = owned_template(session, account_id, template_id)
    installed = session.scalar(select(func.count()).select_from(IntegrationInstance)
                               .where(IntegrationInstance.template_id == row.id)) or 0
    if installed:
        raise errors.conflict(f"integration template {row.id} has {installed} installed instance(s): "
                              "delete them first")
    session.delete(row)
    audit.record(session, account_id, actor, "integration_template.deleted", target_type="integration_template",
                 target_id=template_id, details={"slug": row.slug})
    session.commit()


# ---- credentials ---------------------------------------------------------------------------------------


def list_credentials(session: Session, account_id: int, *, limit: int = 50,
                     offset: int = 0) -> tuple[list[IntegrationCredential], int]:
    query = select(IntegrationCredential).where(IntegrationCredential.account_id == account_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IntegrationCredential.name).limit(limit).offset(offset)).all()
    return list(rows), count


def owned_credential(session: Session, account_id: int, credential_id: int) -> IntegrationCredential:
    row = session.scalar(select(IntegrationCredential).where(IntegrationCredential.id == credential_id,
                                                             IntegrationCredential.account_id == account_id))
    if row is None:
        raise errors.not_found("integration credential")
    return row


def _name_taken(session: Session, account_id: int, name: str, other_than: int | None = None) -> bool:
    query = select(IntegrationCredential.id).where(IntegrationCredential.account_id == account_id,
                                                   IntegrationCredential.name == name)
    if other_than is not None:
        query = query.where(IntegrationCredential.id != other_than)
    return session.scalar(query) is not None


def _seal(settings: Settings, fields: dict[str, str]) -> bytes:
    return box(settings).encrypt(json.dumps(fields, separators=(",", ":"), sort_keys=True))


def credential_fields(settings: Settings, row: IntegrationCredential) -> dict[str, str]:
    """The decrypted ``{field: value}`` (only inside activities, never returned)."""
    return dict(json.loads(box(settings).decrypt(row.encrypted_data)))


def create_credential(session: Session, account_id: int, actor: audit.Actor, settings: Settings, *, name: str,
                      credential_type: str, fields: dict[str, str]) -> IntegrationCredential:
    if _name_taken(session, account_id, name):
        raise errors.conflict(f"the account already has an integration credential named {name!r}")
    row = IntegrationCredential(account_id=account_id, name=name, credential_type=credential_type,
                                encrypted_data=_seal(settings, fields), field_names=sorted(fields))
    session.add(row)
    session.flush()
    audit.record(session, account_id, actor, "integration_credential.created", target_type="integration_credential",
                 target_id=row.id, details={"name": name, "field_names": sorted(fields)})
    session.commit()
    return row


def update_credential(session: Session, account_id: int, actor: audit.Actor, settings: Settings,
                      credential_id: int, changes: dict[str, Any]) -> IntegrationCredential:
    row = owned_credential(session, account_id, credential_id)
    if "name" in changes and _name_taken(session, account_id, changes["name"], other_than=row.id):
        raise errors.conflict(f"the account already has an integration credential named {changes['name']!r}")
    if "name" in changes:
        row.name = changes["name"]
    if "credential_type" in changes:
        row.credential_type = changes["credential_type"]
    if changes.get("fields") is not None:
        row.encrypted_data = _seal(settings, changes["fields"])
        row.field_names = sorted(changes["fields"])
    audit.record(session, account_id, actor, "integration_credential.updated", target_type="integration_credential",
                 target_id=row.id, details={"name": row.name, "field_names": list(row.field_names),
                                            "changed": sorted(changes)})
    session.commit()
    return row


def delete_credential(session: Session, account_id: int, actor: audit.Actor, credential_id: int) -> None:
    row = owned_credential(session, account_id, credential_id)
    session.delete(row)
    audit.record(session, account_id, actor, "integration_credential.deleted", target_type="integration_credential",
                 target_id=credential_id, details={"name": row.name})
    session.commit()
