"""Container templates: reusable specs of an account, checked like a launch (422 naming the
field; the unsafe options need the account's ``ContainerPolicy``) when saved and again at every
launch, so a withdrawn permission takes effect."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import errors
from api.commits import commit_or_conflict
from api.container_schemas import (
    NULLABLE_TEMPLATE_FIELDS,
    ContainerTemplateCreate,
    ContainerTemplatePublic,
    ContainerTemplatesPublic,
    ContainerTemplateUpdate,
)
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from db.models import ContainerInstance, ContainerTemplate
from services.container_specs import SPEC_FIELDS, resolve_spec
from services.containers import checked_spec, template_spec

router = APIRouter(prefix="/container_templates", tags=["containers"])


def _template_public(row: ContainerTemplate) -> ContainerTemplatePublic:
    return ContainerTemplatePublic(
        id=row.id, name=row.name, description=row.description, image=row.image, command=list(row.command or []),
        entrypoint=row.entrypoint, working_dir=row.working_dir, env=dict(row.env or {}),
        secret_env=dict(row.secret_env or {}), cpu_limit=row.cpu_limit, memory_mb=row.memory_mb,
        pids_limit=row.pids_limit, storage_mb=row.storage_mb, network_mode=row.network_mode,
        timeout_seconds=row.timeout_seconds, artifact_paths=list(row.artifact_paths or []),
        labels=dict(row.labels or {}), user=row.user, read_only_rootfs=row.read_only_rootfs,
        privileged=row.privileged, cap_add=list(row.cap_add or []), bind_mounts=list(row.bind_mounts or []),
        created_at=row.created_at, updated_at=row.updated_at,
    )


def _owned_template(session: Session, account_id: int, template_id: int) -> ContainerTemplate:
    row = session.scalar(select(ContainerTemplate).where(ContainerTemplate.id == template_id,
                                                         ContainerTemplate.account_id == account_id))
    if row is None:
        raise errors.not_found("container template")
    return row


def _template_name_taken(session: Session, account_id: int, name: str, exclude_id: int | None = None) -> bool:
    query = select(ContainerTemplate.id).where(ContainerTemplate.account_id == account_id,
                                               ContainerTemplate.name == name)
    if exclude_id is not None:
        query = query.where(ContainerTemplate.id != exclude_id)
    return session.scalar(query) is not None


@router.get("", response_model=ContainerTemplatesPublic)
def list_container_templates(session: SessionDep, caller: CurrentCaller) -> ContainerTemplatesPublic:
    rows = session.scalars(select(ContainerTemplate).where(ContainerTemplate.account_id == caller.account_id)
                           .order_by(ContainerTemplate.name)).all()
    return ContainerTemplatesPublic(data=[_template_public(r) for r in rows], count=len(rows))


@router.post("", response_model=ContainerTemplatePublic, status_code=status.HTTP_201_CREATED)
def create_container_template(body: ContainerTemplateCreate, session: SessionDep,
                              caller: WriterCaller, settings: SettingsDep) -> ContainerTemplatePublic:
    """Save a template. Safe by default; ``privileged``, ``network_mode: host``, ``cap_add`` and
    ``bind_mounts`` are refused (422 naming the field) unless the account's policy allows them."""
    values = body.model_dump(mode="json")
    spec = checked_spec(session, caller.account_id, resolve_spec(None, values), settings)
    if _template_name_taken(session, caller.account_id, body.name):
        raise errors.conflict(f"a container template named {body.name!r} already exists")
    row = ContainerTemplate(account_id=caller.account_id, name=body.name, description=body.description, **spec)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(f"a container template named {body.name!r} already exists") from None
    if spec["user"] is None:  # on insert, None means "the column default" (nobody) to the ORM
        session.execute(update(ContainerTemplate).where(ContainerTemplate.id == row.id).values(user=None))
        session.refresh(row)
    commit_or_conflict(session, f"a container template named {body.name!r} already exists")
    return _template_public(row)


@router.get("/{template_id}", response_model=ContainerTemplatePublic)
def show_container_template(template_id: int, session: SessionDep, caller: CurrentCaller) -> ContainerTemplatePublic:
    return _template_public(_owned_template(session, caller.account_id, template_id))


@router.patch("/{template_id}", response_model=ContainerTemplatePublic)
def update_container_template(template_id: int, body: ContainerTemplateUpdate, session: SessionDep,
                              caller: WriterCaller, settings: SettingsDep) -> ContainerTemplatePublic:
    """Change some fields; the result is checked as a whole, against today's policy."""
    row = _owned_template(session, caller.account_id, template_id)
    changes = body.model_dump(mode="json", exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None and name not in NULLABLE_TEMPLATE_FIELDS]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "type": "null", "msg": "may not be null"}
                                    for name in nulls])
    merged = {**template_spec(row), **{k: v for k, v in changes.items() if k in SPEC_FIELDS}}
    spec = checked_spec(session, caller.account_id, merged, settings)
    if "name" in changes and _template_name_taken(session, caller.account_id, changes["name"], exclude_id=row.id):
        raise errors.conflict(f"a container template named {changes['name']!r} already exists")
    for name, value in spec.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
    for name in ("name", "description"):
        if name in changes:
            setattr(row, name, changes[name])
    commit_or_conflict(session, f"a container template named {row.name!r} already exists")
    return _template_public(row)


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_container_template(template_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    """Delete a template; instances started from it keep their resolved spec."""
    row = _owned_template(session, caller.account_id, template_id)
    session.execute(update(ContainerInstance).where(ContainerInstance.template_id == row.id)
                    .values(template_id=None).execution_options(synchronize_session=False))
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
