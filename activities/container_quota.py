"""Per-account container quotas (the seed's ``ResourceQuota``), reserved atomically.

An instance holds its share of the quota (one concurrent slot, its CPU, memory and storage) while
its status is in :data:`HOLDING_STATUSES`. ``queued`` and the final statuses hold nothing, so a
reservation is released by the status change that ends the instance: there is no counter to
decrement and nothing to leak when a process dies half-way.

:func:`try_reserve` serialises on the account's quota row: ``SELECT ... FOR UPDATE`` on PostgreSQL;
on SQLite a no-op ``UPDATE`` of that row takes the database's write lock before anything is
counted. Either way the count and the status change happen under one lock, so 50 concurrent
launches against ``max_concurrent=5`` start exactly 5. The caller commits (which releases it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import ContainerInstance, ResourceQuota

HOLDING_STATUSES = ("pending", "provisioning", "running")
FINAL_STATUSES = ("completed", "failed", "cancelled", "timeout")
# CPU is a float: 0.1 + 0.2 must still fit in 0.3.
_EPSILON = 1e-9
_RAISE_IT = "or ask an account admin to raise it (PUT /container_quotas)"


def quota_for(session: Session, account_id: int) -> ResourceQuota:
    """The account's quota row, created with the defaults when missing (concurrent creators
    meet in ``INSERT ... ON CONFLICT DO NOTHING``, so there is never a second row)."""
    row = session.scalar(select(ResourceQuota).where(ResourceQuota.account_id == account_id))
    if row is not None:
        return row
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(ResourceQuota).values(account_id=account_id)
                    .on_conflict_do_nothing(index_elements=["account_id"]))
    return session.scalars(select(ResourceQuota).where(ResourceQuota.account_id == account_id)
                           .execution_options(populate_existing=True)).one()


def _lock_quota(session: Session, account_id: int) -> ResourceQuota:
    quota_for(session, account_id)
    query = select(ResourceQuota).where(ResourceQuota.account_id == account_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    else:
        # SQLite has no row locks: writing the row takes the database write lock, held to commit.
        session.execute(update(ResourceQuota).where(ResourceQuota.account_id == account_id)
                        .values(updated_at=ResourceQuota.updated_at)
                        .execution_options(synchronize_session=False))
    return session.scalars(query.execution_options(populate_existing=True)).one()


def usage(session: Session, account_id: int, *, exclude_instance_id: int | None = None) -> dict[str, Any]:
    """What the account's holding instances reserve: ``concurrent``, ``cpu`` (cores),
    ``memory_mb`` and ``storage_mb``."""
    query = select(
        func.count(ContainerInstance.id),
        func.coalesce(func.sum(ContainerInstance.reserved_cpu), 0.0),
        func.coalesce(func.sum(ContainerInstance.reserved_memory_mb), 0),
        func.coalesce(func.sum(ContainerInstance.reserved_storage_mb), 0),
    ).where(ContainerInstance.account_id == account_id, ContainerInstance.status.in_(HOLDING_STATUSES))
    if exclude_instance_id is not None:
        query = query.where(ContainerInstance.id != exclude_instance_id)
    count, cpu, memory, storage = session.execute(query).one()
    return {"concurrent": int(count), "cpu": round(float(cpu), 3), "memory_mb": int(memory),
            "storage_mb": int(storage)}


def queued_count(session: Session, account_id: int) -> int:
    """How many of the account's instances wait for quota (status ``queued``)."""
    return session.scalar(select(func.count(ContainerInstance.id)).where(
        ContainerInstance.account_id == account_id, ContainerInstance.status == "queued")) or 0


def exceeds_limits(quota: ResourceQuota, instance: ContainerInstance) -> list[tuple[str, str]]:
    """(field, reason) for every limit the instance exceeds on its own: it could never start,
    so waiting for it is pointless."""
    problems: list[tuple[str, str]] = []
    if instance.reserved_cpu > quota.max_cpu + _EPSILON:
        problems.append(("cpu_limit", f"{instance.reserved_cpu:g} cores is above the account's total CPU quota of "
                                      f"{quota.max_cpu:g} cores; lower it {_RAISE_IT}"))
    if instance.reserved_memory_mb > quota.max_memory_mb:
        problems.append(("memory_mb", f"{instance.reserved_memory_mb} MB is above the account's total memory "
                                      f"quota of {quota.max_memory_mb} MB; lower it {_RAISE_IT}"))
    if instance.reserved_storage_mb > quota.max_storage_mb:
        problems.append(("storage_mb", f"{instance.reserved_storage_mb} MB is above the account's total storage "
                                       f"quota of {quota.max_storage_mb} MB; lower it {_RAISE_IT}"))
    if instance.timeout_seconds > quota.max_duration_seconds:
        problems.append(("timeout_seconds", f"{instance.timeout_seconds} s is above the account's maximum duration "
                                            f"of {quota.max_duration_seconds} s; lower it {_RAISE_IT}"))
    return problems


def refusal(quota: ResourceQuota, used: dict[str, Any], instance: ContainerInstance) -> str | None:
    """Why the instance does not fit next to ``used`` (pure), or None when it fits."""
    own = exceeds_limits(quota, instance)
    if own:
        return "; ".join(f"{name}: {reason}" for name, reason in own)
    if used["concurrent"] + 1 > quota.max_concurrent:
        return (f"{used['concurrent']} of {quota.max_concurrent} concurrent containers are running; wait for one "
                f"to finish, launch with queue: true to wait in line, {_RAISE_IT}")
    if used["cpu"] + instance.reserved_cpu > quota.max_cpu + _EPSILON:
        return (f"{used['cpu']:g} of {quota.max_cpu:g} CPU cores are reserved and this container asks for "
                f"{instance.reserved_cpu:g}; wait for one to finish, launch with queue: true, {_RAISE_IT}")
    if used["memory_mb"] + instance.reserved_memory_mb > quota.max_memory_mb:
        return (f"{used['memory_mb']} of {quota.max_memory_mb} MB of memory are reserved and this container asks "
                f"for {instance.reserved_memory_mb} MB; wait for one to finish, launch with queue: true, {_RAISE_IT}")
    if used["storage_mb"] + instance.reserved_storage_mb > quota.max_storage_mb:
        return (f"{used['storage_mb']} of {quota.max_storage_mb} MB of storage are reserved and this container "
                f"asks for {instance.reserved_storage_mb} MB; wait for one to finish, launch with queue: true, "
                f"{_RAISE_IT}")
    return None


def try_reserve(session: Session, instance: ContainerInstance) -> str | None:
    """Reserve the instance's share under the quota row's lock: set its status to ``pending``
    and return None, or return why it does not fit (its status is left as it was). The caller
    commits; the lock is held until then, so keep the rest of the transaction short."""
    session.add(instance)
    session.flush()  # an id to leave the instance itself out of the count
    quota = _lock_quota(session, instance.account_id)
    # Under the lock, the row's status is current: a queued instance cancelled meanwhile stays so.
    session.refresh(instance, attribute_names=["status"])
    if instance.status in FINAL_STATUSES:
        return f"container {instance.id} has already ended (status {instance.status})"
    reason = refusal(quota, usage(session, instance.account_id, exclude_instance_id=instance.id), instance)
    if reason is None:
        instance.status = "pending"
    return reason
