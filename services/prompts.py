"""Prompt templates (the seed's PromptTemplate): named, versioned Jinja2 prompts of an account.

Every write checks the template text (``domain.templating.check_template``, the line of a syntax
error in the 422) and the variables schema (``domain.json_schemas.check_schema``). Versions are
immutable: a new text is a new version, which becomes current. Rendering validates the variables
against the version's schema (422 ending with the JSON pointer) and renders body and system in
the sandbox with the output cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.ai_models import PromptTemplate, PromptTemplateVersion
from domain import errors, json_schemas, templating
from services import audit

META_FIELDS = ("name", "description", "category")


@dataclass(frozen=True)
class RenderedPrompt:
    rendered: str
    system: str | None
    version: int


def list_templates(session: Session, account_id: int, *, category: str | None, limit: int,
                   offset: int) -> tuple[list[PromptTemplate], int]:
    query = select(PromptTemplate).where(PromptTemplate.account_id == account_id)
    if category:
        query = query.where(PromptTemplate.category == category)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(PromptTemplate.name).limit(limit).offset(offset)).all()
    return list(rows), count


def get_template(session: Session, account_id: int, template_id: int) -> PromptTemplate:
    row = session.scalar(select(PromptTemplate).where(PromptTemplate.id == template_id,
                                                      PromptTemplate.account_id == account_id))
    if row is None:
        raise errors.not_found("prompt template")
    return row


def template_by_name(session: Session, account_id: int, name: str) -> PromptTemplate:
    row = session.scalar(select(PromptTemplate).where(PromptTemplate.account_id == account_id,
                                                      PromptTemplate.name == name))
    if row is None:
        raise errors.NotFound(f"no prompt template named {name!r} in this account")
    return row


def get_version(session: Session, template: PromptTemplate, version: int | None = None) -> PromptTemplateVersion:
    number = template.current_version if version is None else version
    row = session.scalar(select(PromptTemplateVersion).where(PromptTemplateVersion.template_id == template.id,
                                                             PromptTemplateVersion.version == number))
    if row is None:
        raise errors.NotFound(f"prompt template {template.name!r} has no version {number}")
    return row


def list_versions(session: Session, template: PromptTemplate, *, limit: int,
                  offset: int) -> tuple[list[PromptTemplateVersion], int]:
    query = select(PromptTemplateVersion).where(PromptTemplateVersion.template_id == template.id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(PromptTemplateVersion.version.desc()).limit(limit).offset(offset)).all()
    return list(rows), count


def _check_text(body: str, system: str | None, schema: dict[str, Any]) -> None:
    templating.check_template(body, ("body", "body"))
    if system is not None:
        templating.check_template(system, ("body", "system"))
    json_schemas.check_schema(schema, ("body", "variables_schema"))


def _name_taken(session: Session, account_id: int, name: str, template_id: int | None = None) -> None:
    query = select(PromptTemplate.id).where(PromptTemplate.account_id == account_id, PromptTemplate.name == name)
    if template_id is not None:
        query = query.where(PromptTemplate.id != template_id)
    if session.scalar(query) is not None:
        raise errors.conflict(f"a prompt template named {name!r} already exists in this account")


def create_template(session: Session, account_id: int, actor: audit.Actor, meta: dict[str, Any], body: str,
                    system: str | None, schema: dict[str, Any]) -> PromptTemplate:
    _check_text(body, system, schema)
    _name_taken(session, account_id, meta["name"])
    row = PromptTemplate(account_id=account_id, current_version=1, **meta)
    session.add(row)
    session.flush()
    session.add(PromptTemplateVersion(template_id=row.id, version=1, body=body, system=system,
                                      variables_schema=schema, created_by_user_id=actor.user_id))
    session.flush()
    audit.record(session, account_id, actor, "prompt_template.created", target_type="prompt_template",
                 target_id=row.id, details={"name": row.name, "version": 1})
    return row


def update_template(session: Session, account_id: int, actor: audit.Actor, template_id: int,
                    changes: dict[str, Any]) -> PromptTemplate:
    row = get_template(session, account_id, template_id)
    for name in META_FIELDS:
        if name in changes and changes[name] is None:
            raise errors.field_error([name], "may not be null")
    if "name" in changes:
        _name_taken(session, account_id, changes["name"], row.id)
    for name in META_FIELDS:
        if name in changes:
            setattr(row, name, changes[name])
    session.flush()
    audit.record(session, account_id, actor, "prompt_template.updated", target_type="prompt_template",
                 target_id=row.id, details={"name": row.name, "changed": sorted(changes)})
    return row


def add_version(session: Session, account_id: int, actor: audit.Actor, template_id: int, body: str,
                system: str | None, schema: dict[str, Any]) -> PromptTemplateVersion:
    row = get_template(session, account_id, template_id)
    _check_text(body, system, schema)
    number = (session.scalar(select(func.max(PromptTemplateVersion.version))
                             .where(PromptTemplateVersion.template_id == row.id)) or 0) + 1
    version = PromptTemplateVersion(template_id=row.id, version=number, body=body, system=system,
                                    variables_schema=schema, created_by_user_id=actor.user_id)
    session.add(version)
    row.current_version = number
    session.flush()
    audit.record(session, account_id, actor, "prompt_template.version_created", target_type="prompt_template",
                 target_id=row.id, details={"name": row.name, "version": number})
    return version


def delete_template(session: Session, account_id: int, actor: audit.Actor, template_id: int) -> None:
    row = get_template(session, account_id, template_id)
    name = row.name
    for version in session.scalars(select(PromptTemplateVersion).where(PromptTemplateVersion.template_id == row.id)):
        session.delete(version)
    session.delete(row)
    audit.record(session, account_id, actor, "prompt_template.deleted", target_type="prompt_template",
                 target_id=template_id, details={"name": name})


def render_text(body: str, system: str | None, variables: dict[str, Any], schema: dict[str, Any], *,
                max_bytes: int, field: tuple[str, ...] = ("body",)) -> tuple[str, str | None]:
    """Validate ``variables`` against ``schema`` (loc ``[*field, "variables", <pointer>]``) and
    render the body and system text in the sandbox (loc ``[*field, "body"|"system", "line", N]``)."""
    json_schemas.validate(variables, schema, (*field, "variables"))
    rendered = templating.render(body, variables, field=(*field, "body"), max_bytes=max_bytes)
    rendered_system = templating.render(system, variables, field=(*field, "system"), max_bytes=max_bytes) \
        if system is not None else None
    return rendered, rendered_system


def render_version(version: PromptTemplateVersion, variables: dict[str, Any], *, max_bytes: int,
                   field: tuple[str, ...] = ("body",)) -> RenderedPrompt:
    rendered, system = render_text(version.body, version.system, variables, version.variables_schema or {},
                                   max_bytes=max_bytes, field=field)
    return RenderedPrompt(rendered=rendered, system=system, version=version.version)
