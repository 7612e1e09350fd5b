"""The account's container policy (what beyond the safe defaults its templates and launches may
use) and quota (how much its instances may hold at once). Reading is for every member; changing
is for account admins only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from activities import container_quota
from api import errors
from api.commits import commit_or_conflict
from api.container_schemas import (
    ContainerPolicyPublic,
    ContainerPolicyUpdate,
    ContainerQuotaLimits,
    ContainerQuotaPublic,
    ContainerQuotaUpdate,
    ContainerQuotaUsage,
)
from api.deps import ActorDep, CurrentCaller, SessionDep
from db.models import ContainerPolicy
from services import audit
from services.container_specs import CAPABILITY, clean_absolute_path, normalize_capability

router = APIRouter(tags=["containers"])


# Admin-only routes: their scope is ``admin`` (domain.access), which only the admin role grants;
# ``authenticate`` refuses everyone else before the route runs.
AdminCaller = CurrentCaller


def _policy_public(row: ContainerPolicy | None) -> ContainerPolicyPublic:
    if row is None:
        return ContainerPolicyPublic(allow_privileged=False, allow_host_network=False, allowed_capabilities=[],
                                     allowed_bind_paths=[], updated_at=None)
    return ContainerPolicyPublic(allow_privileged=row.allow_privileged, allow_host_network=row.allow_host_network,
                                 allowed_capabilities=list(row.allowed_capabilities or []),
                                 allowed_bind_paths=list(row.allowed_bind_paths or []), updated_at=row.updated_at)


@router.get("/container_policy", response_model=ContainerPolicyPublic)
def show_container_policy(session: SessionDep, caller: CurrentCaller) -> ContainerPolicyPublic:
    """What the account allows beyond the safe defaults (nothing until an admin says so)."""
    return _policy_public(session.scalar(select(ContainerPolicy)
                                         .where(ContainerPolicy.account_id == caller.account_id)))


@router.put("/container_policy", response_model=ContainerPolicyPublic, summary="Set the container policy")
def put_container_policy(body: ContainerPolicyUpdate, session: SessionDep, caller: AdminCaller,
                         actor: ActorDep) -> ContainerPolicyPublic:
    """Allow (or stop allowing) privileged mode, the host network, named capabilities and bind
    mounts under host path prefixes. Account admins only; only the fields sent change. Templates
    saved earlier are checked again at every launch, so withdrawing a permission takes effect."""
    changes = body.model_dump(exclude_unset=True)
    problems: list[dict[str, Any]] = []
    nulls = [name for name, value in changes.items() if value is None]
    problems += [{"loc": ["body", name], "type": "null", "msg": "may not be null"} for name in nulls]
    if changes.get("allowed_capabilities"):
        caps = [normalize_capability(c) for c in changes["allowed_capabilities"]]
        for index, cap in enumerate(caps):
            if not CAPABILITY.match(cap):
                problems.append({"loc": ["body", "allowed_capabilities", index], "type": "value_error",
                                 "msg": "not a capability name (e.g. NET_BIND_SERVICE)"})
        changes["allowed_capabilities"] = sorted(set(caps))
    if changes.get("allowed_bind_paths"):
        paths = []
        for index, path in enumerate(changes["allowed_bind_paths"]):
            clean = clean_absolute_path(path)
            if clean is None:
                problems.append({"loc": ["body", "allowed_bind_paths", index], "type": "value_error",
                                 "msg": "must be an absolute host path without '..'"})
            else:
                paths.append(clean)
        changes["allowed_bind_paths"] = sorted(set(paths))
    if problems:
        raise errors.unprocessable(problems)
    row = session.scalar(select(ContainerPolicy).where(ContainerPolicy.account_id == caller.account_id))
    if row is None:
        row = ContainerPolicy(account_id=caller.account_id, allowed_capabilities=[], allowed_bind_paths=[])
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = datetime.now(UTC)
    # the new policy (not secret); a new row's column defaults are not applied before the flush
    audit.record(session, caller.account_id, actor, "policy.updated", target_type="container_policy",
                 target_id=caller.account_id, details={
                     "changed": sorted(changes), "allow_privileged": bool(row.allow_privileged),
                     "allow_host_network": bool(row.allow_host_network),
                     "allowed_capabilities": list(row.allowed_capabilities or []),
                     "allowed_bind_paths": list(row.allowed_bind_paths or [])})
    commit_or_conflict(session, "the policy was changed concurrently; try again")
    return _policy_public(row)


def _quota_public(session: Session, account_id: int) -> ContainerQuotaPublic:
    quota = container_quota.quota_for(session, account_id)
    used = container_quota.usage(session, account_id)
    queued = container_quota.queued_count(session, account_id)
    session.commit()  # the default row, when it was just created
    return ContainerQuotaPublic(
        limits=ContainerQuotaLimits(max_concurrent=quota.max_concurrent, max_cpu=quota.max_cpu,
                                    max_memory_mb=quota.max_memory_mb, max_storage_mb=quota.max_storage_mb,
                                    max_duration_seconds=quota.max_duration_seconds),
        usage=ContainerQuotaUsage(**used), queued=queued)


@router.get("/container_quotas", response_model=ContainerQuotaPublic)
def show_container_quota(session: SessionDep, caller: CurrentCaller) -> ContainerQuotaPublic:
    """The account's limits and what its pending, provisioning and running instances use."""
    return _quota_public(session, caller.account_id)


@router.put("/container_quotas", response_model=ContainerQuotaPublic, summary="Set the container quota")
def put_container_quota(body: ContainerQuotaUpdate, session: SessionDep, caller: AdminCaller,
                        actor: ActorDep) -> ContainerQuotaPublic:
    """Change the limits (account admins only; only the fields sent change). Lowering a limit
    stops nothing that runs: it applies to the next reservations."""
    changes = body.model_dump(exclude_unset=True)
    nulls = [name for name, value in changes.items() if value is None]
    if nulls:
        raise errors.unprocessable([{"loc": ["body", name], "type": "null", "msg": "may not be null"}
                                    for name in nulls])
    quota = container_quota.quota_for(session, caller.account_id)
    for name, value in changes.items():
        setattr(quota, name, value)
    limits = {name: getattr(quota, name) for name in ContainerQuotaLimits.model_fields}
    audit.record(session, caller.account_id, actor, "quota.updated", target_type="container_quota",
                 target_id=caller.account_id, details={"changed": sorted(changes), **limits})
    session.commit()
    return _quota_public(session, caller.account_id)
