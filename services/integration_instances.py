"""Integration instances: a template installed in an account with its configuration (the
template's ``default_configuration`` merged under the instance's own, validated against the
template's ``configuration_schema`` on every write) and the credential it uses (it must belong to
the account and carry every required field of the template's ``credential_requirements``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.integration_models import IntegrationCredential, IntegrationInstance, IntegrationTemplate
from domain import errors
from domain.integrations import merged_configuration, missing_credential_fields
from domain.json_schemas import validate
from services import audit
from services.integrations import visible_template


def list_instances(session: Session, account_id: int, *, template_id: int | None = None, status: str | None = None,
                   limit: int = 50, offset: int = 0) -> tuple[list[IntegrationInstance], int]:
    query = select(IntegrationInstance).where(IntegrationInstance.account_id == account_id)
    if template_id is not None:
        query = query.where(IntegrationInstance.template_id == template_id)
    if status:
        query = query.where(IntegrationInstance.status == status)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IntegrationInstance.name).limit(limit).offset(offset)).all()
    return list(rows), count


def owned_instance(session: Session, account_id: int, instance_id: int) -> IntegrationInstance:
    row = session.scalar(select(IntegrationInstance).where(IntegrationInstance.id == instance_id,
                                                           IntegrationInstance.account_id == account_id))
    if row is None:
        raise errors.not_found("integration instance")
    return row


def instance_by_reference(session: Session, account_id: int, reference: Any) -> IntegrationInstance | None:
    """An instance of the account by name, or by id (a number or a string of digits)."""
    text = str(reference).strip()
    clauses = [IntegrationInstance.name == text]
    if text.isdigit():
        clauses.append(IntegrationInstance.id == int(text))
    return session.scalars(select(IntegrationInstance).where(IntegrationInstance.account_id == account_id,
                                                             or_(*clauses))
                           .order_by(IntegrationInstance.name != text)).first()


def template_of(session: Session, row: IntegrationInstance) -> IntegrationTemplate:
    template = session.get(IntegrationTemplate, row.template_id)
    if template is None:  # the foreign key forbids it; a clear message all the same
        raise errors.not_found("integration template")
    return template


def _checked(session: Session, account_id: int, template: IntegrationTemplate, configuration: dict[str, Any],
             credential_id: int | None) -> dict[str, Any]:
    """The configuration as stored (the instance's own), after checking the merged one and the credential."""
    validate(merged_configuration(template.default_configuration, configuration),
             template.configuration_schema or {}, ["body", "configuration"])
    requirements = list(template.credential_requirements or [])
    if credential_id is None:
        required = missing_credential_fields(requirements, [])
        if required:
            raise errors.field_error(["credential_id"], f"template {template.slug!r} needs a credential with the "
                                                        f"field(s) {', '.join(required)}")
        return configuration
    credential = session.scalar(select(IntegrationCredential).where(IntegrationCredential.id == credential_id,
                                                                    IntegrationCredential.account_id == account_id))
    if credential is None:
        raise errors.field_error(["credential_id"], f"the account has no integration credential {credential_id}")
    missing = missing_credential_fields(requirements, credential.field_names or [])
    if missing:
        raise errors.field_error(["credential_id"], f"credential {credential.name!r} lacks the required field(s) "
                                                    f"{', '.join(missing)}")
    return configuration


def _name_taken(session: Session, account_id: int, name: str, other_than: int | None = None) -> bool:
    query = select(IntegrationInstance.id).where(IntegrationInstance.account_id == account_id,
                                                 IntegrationInstance.name == name)
    if other_than is not None:
        query = query.where(IntegrationInstance.id != other_than)
    return session.scalar(query) is not None


def create_instance(session: Session, account_id: int, actor: audit.Actor, *, template_id: int, name: str,
                    configuration: dict[str, Any], credential_id: int | None) -> IntegrationInstance:
    """Install a template (the account's own or a public one); its ``install_count`` grows by one."""
    try:
        template = visible_template(session, account_id, template_id)
    except errors.NotFound:
        raise errors.field_error(["template_id"], f"no integration template {template_id} for this account") from None
    configuration = _checked(session, account_id, template, configuration, credential_id)
    if _name_taken(session, account_id, name):
        raise errors.conflict(f"the account already has an integration instance named {name!r}")
    row = IntegrationInstance(account_id=account_id, template_id=template.id, name=name,
                              configuration=configuration, credential_id=credential_id)
    session.add(row)
    session.execute(update(IntegrationTemplate).where(IntegrationTemplate.id == template.id)
                    .values(install_count=IntegrationTemplate.install_count + 1))
    session.flush()
    audit.record(session, account_id, actor, "integration_instance.created", target_type="integration_instance",
                 target_id=row.id, details={"name": name, "template_id": template.id,
                                            "credential_id": credential_id})
    session.commit()
    return row


def update_instance(session: Session, account_id: int, actor: audit.Actor, instance_id: int,
                    changes: dict[str, Any]) -> IntegrationInstance:
    row = owned_instance(session, account_id, instance_id)
    template = template_of(session, row)
    configuration = changes.get("configuration", row.configuration) or {}
    credential_id = changes.get("credential_id", row.credential_id)
    _checked(session, account_id, template, configuration, credential_id)
    if "name" in changes and _name_taken(session, account_id, changes["name"], other_than=row.id):
        raise errors.conflict(f"the account already has an integration instance named {changes['name']!r}")
    for name, value in changes.items():
        setattr(row, name, value)
    audit.record(session, account_id, actor, "integration_instance.updated", target_type="integration_instance",
                 target_id=row.id, details={"fields": sorted(changes), "status": row.status})
    session.commit()
    return row


def delete_instance(session: Session, account_id: int, actor: audit.Actor, instance_id: int) -> None:
    row = owned_instance(session, account_id, instance_id)
    session.delete(row)
    audit.record(session, account_id, actor, "integration_instance.deleted", target_type="integration_instance",
                 target_id=instance_id, details={"name": row.name})
    session.commit()
