"""Container specs against the account's stored policy and secrets: used by the container
routes and by the container step activities alike (the pure rules are ``services.container_specs``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ContainerPolicy, ContainerTemplate, Secret
from domain import errors
from services.container_specs import SPEC_FIELDS, PolicyView, check_spec, normalized_spec
from settings import Settings


def policy_view(session: Session, account_id: int) -> PolicyView:
    row = session.scalar(select(ContainerPolicy).where(ContainerPolicy.account_id == account_id))
    if row is None:
        return PolicyView()
    return PolicyView(allow_privileged=row.allow_privileged, allow_host_network=row.allow_host_network,
                      allowed_capabilities=frozenset(row.allowed_capabilities or []),
                      allowed_bind_paths=tuple(row.allowed_bind_paths or []))


def _secret_names(session: Session, account_id: int, spec: dict[str, Any]) -> set[str]:
    wanted = {v for v in (spec.get("secret_env") or {}).values() if isinstance(v, str)}
    if not wanted:
        return set()
    return set(session.scalars(select(Secret.name).where(Secret.account_id == account_id,
                                                         Secret.name.in_(wanted))))


def checked_spec(session: Session, account_id: int, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The spec normalised, or 422 listing every problem (each naming its field)."""
    problems = check_spec(spec, policy_view(session, account_id), _secret_names(session, account_id, spec),
                          allow_private_registries=settings.private_targets_allowed)
    if problems:
        raise errors.unprocessable(problems)
    return normalized_spec(spec)


def template_spec(row: ContainerTemplate) -> dict[str, Any]:
    return {name: getattr(row, name) for name in SPEC_FIELDS}


