"""Managed engine endpoints: Docker hosts and Swarm clusters, one use case for both.

A host and a cluster are the same thing to manage (:class:`db.models.ManagedEngineEndpoint`): a
row holding an engine endpoint with encrypted TLS material, and, with auto-sync, a looping sync
workflow that follows the row — started when it is created or auto-sync is turned on, terminated
when it is deleted or auto-sync is turned off, re-timed by its ``set_interval`` signal and woken by
``sync_now`` when the endpoint or TLS changes. What differs between the two is an
:class:`EngineKind` (see :mod:`services.engine_kinds`): the model, its workflow, the rows stored
under it, how a connection test probes the engine and where its outcome is recorded.

Everything here is synchronous on the caller's session (a plain ``def`` route's worker thread) and
raises domain errors; Temporal is called through :meth:`TemporalGateway.call` (the client belongs
to the event loop), except the sync round's wait, a coroutine for an ``async`` route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from adapters.docker_engine import EngineProblem, HostTarget, docker_client, engine_target, secret_box
from adapters.engine_access import endpoint_policy_refusal, engine_shared, require_endpoint
from adapters.temporal import TemporalGateway, is_not_found
from db.models import ManagedEngineEndpoint
from domain.errors import Unavailable, UpstreamFailed, conflict, field_error, not_found
from settings import Settings

#: How long a sync round requested by a caller is waited for before it is answered as running.
SYNC_WAIT_SECONDS = 60.0
SINGLE_ROUND_TIMEOUT = timedelta(minutes=10)
TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key")
PLAIN_FIELDS = ("name", "endpoint", "environment", "auto_sync", "sync_interval_seconds")


@dataclass(frozen=True)
class EngineKind:
    """What differs between a Docker host and a Swarm cluster (instances: :mod:`services.engine_kinds`)."""

    model: type[ManagedEngineEndpoint]
    noun: str  # "docker host": in 404 and 409 messages
    short: str  # "host": in Temporal messages
    workflow: Any  # the looping sync workflow class (``run``, ``set_interval``, ``sync_now``, ``sync_round``)
    workflow_id: Callable[[int], str]
    sync_input: Callable[[ManagedEngineEndpoint, bool], Any]  # (row, single_round) -> workflow input
    children: tuple[Any, ...]  # models stored under a row, deleted with it (children first)
    parent_key: str  # their column naming the row: host_id | cluster_id
    counted: tuple[tuple[str, Any], ...]  # (answer field, model) of rows counted in a row's answer
    probe: Callable[[Any], dict[str, Any]]  # a connection test against a client
    record: Callable[[Session, int, int, int, str, EngineProblem | None], None]  # the test's outcome
    classify: Callable[[BaseException, str], EngineProblem | None]
    fatal_probe_errors: tuple[type[BaseException], ...] = ()  # raised, not answered as ok=false
    delete_guard: Callable[[Session, int], None] | None = None
    remember_probe: Callable[[ManagedEngineEndpoint, dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    values: dict[str, Any] | None
    problem: EngineProblem | None


# ---- rows -------------------------------------------------------------------------------------------------


def get_endpoint(session: Session, kind: EngineKind, account_id: int, row_id: int) -> Any:
    model = kind.model
    row = session.scalar(select(model).where(model.id == row_id, model.account_id == account_id))
    if row is None:
        raise not_found(kind.noun)
    return row


def list_endpoints(session: Session, kind: EngineKind, account_id: int, environment: str | None,
                   status: str | None, limit: int, offset: int) -> tuple[list[Any], int]:
    """One page of the account's rows (by id) and the number of rows matching the filters."""
    model = kind.model
    query = select(model).where(model.account_id == account_id)
    if environment:
        query = query.where(model.environment == environment)
    if status:
        query = query.where(model.status == status)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return list(session.scalars(query.order_by(model.id).limit(limit).offset(offset))), count


def child_counts(session: Session, kind: EngineKind, ids: list[int]) -> dict[int, dict[str, int]]:
    """For each of ``ids``, how many rows of each ``kind.counted`` model it has (a host's containers
    and images, a cluster's nodes and services): ``{id: {"containers": 3, "images": 0}}``."""
    counts: dict[int, dict[str, int]] = {row_id: {name: 0 for name, _ in kind.counted} for row_id in ids}
    if not ids:
        return counts
    for name, model in kind.counted:
        column = getattr(model, kind.parent_key)
        for row_id, number in session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column)):
            counts[row_id][name] = number
    return counts


def _check_tls_pair(cert_set: bool, key_set: bool) -> None:
    if cert_set != key_set:
        raise field_error(["tls_key" if cert_set else "tls_cert"], "a client certificate and its key come together")


def _tls_changes(settings: Settings, values: Mapping[str, Any], fields: set[str]) -> dict[str, bytes | None]:
    box = secret_box(settings)
    return {f"encrypted_{name}": (box.encrypt(values[name]) if values.get(name) else None)
            for name in TLS_FIELDS if name in fields}


def _commit_named(session: Session, kind: EngineKind, name: Any) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a {kind.noun} named {name!r} already exists") from None


def create_endpoint(session: Session, kind: EngineKind, account_id: int, values: Mapping[str, Any],
                    fields: set[str], settings: Settings, temporal: TemporalGateway) -> Any:
    """Insert the row; with auto-sync start its workflow (no workflow: no row, 503)."""
    _check_tls_pair(bool(values.get("tls_cert")), bool(values.get("tls_key")))
    require_endpoint(settings, values["endpoint"])
    row = kind.model(account_id=account_id, status="pending", metrics={},
                     **{name: values[name] for name in PLAIN_FIELDS}, **_tls_changes(settings, values, fields))
    session.add(row)
    _commit_named(session, kind, values["name"])
    if row.auto_sync:
        try:
            row.workflow_id = _start_sync(temporal, kind, row)
        except RPCError:
            session.delete(row)
            session.commit()
            raise Unavailable(f"Temporal is unavailable; the {kind.short} was not created "
                              "(its sync workflow could not start)") from None
        session.commit()
    return row


def update_endpoint(session: Session, kind: EngineKind, account_id: int, row_id: int, values: Mapping[str, Any],
                    fields: set[str], settings: Settings, temporal: TemporalGateway) -> Any:
    """Change only ``fields``; the sync workflow follows (started, stopped, re-timed, woken)."""
    row = get_endpoint(session, kind, account_id, row_id)
    _check_tls_pair(row.encrypted_tls_cert is not None if "tls_cert" not in fields else bool(values.get("tls_cert")),
                    row.encrypted_tls_key is not None if "tls_key" not in fields else bool(values.get("tls_key")))
    if "endpoint" in fields and values["endpoint"] != row.endpoint:
        require_endpoint(settings, values["endpoint"] or "")
    was_auto, old_interval, old_endpoint = row.auto_sync, row.sync_interval_seconds, row.endpoint
    tls = _tls_changes(settings, values, fields)
    for name in PLAIN_FIELDS:
        if name in fields:
            setattr(row, name, values[name])
    for name, value in tls.items():
        setattr(row, name, value)
    if "auto_sync" in fields and not values["auto_sync"]:
        row.workflow_id = None
    _commit_named(session, kind, values.get("name"))
    try:
        if row.auto_sync and not was_auto:
            row.workflow_id = _start_sync(temporal, kind, row)
            session.commit()
        elif was_auto and not row.auto_sync:
            temporal.call(temporal.terminate, kind.workflow_id(row.id), "auto-sync turned off")
        elif row.auto_sync:
            if row.sync_interval_seconds != old_interval:
                temporal.call(temporal.signal, kind.workflow_id(row.id), kind.workflow.set_interval,
                              row.sync_interval_seconds)
            if row.endpoint != old_endpoint or tls:
                temporal.call(temporal.signal, kind.workflow_id(row.id), kind.workflow.sync_now)
    except RPCError:
        raise Unavailable(f"Temporal is unavailable; the {kind.short} was saved but its sync workflow did not "
                          "take the change yet") from None
    return row


def delete_endpoint(session: Session, kind: EngineKind, account_id: int, row_id: int,
                    temporal: TemporalGateway) -> None:
    """Stop the sync workflow, then forget the row and what was stored under it (the engine itself
    is not touched)."""
    get_endpoint(session, kind, account_id, row_id)
    if kind.delete_guard is not None:
        kind.delete_guard(session, row_id)
    session.rollback()
    try:
        temporal.call(temporal.terminate, kind.workflow_id(row_id), f"{kind.short} deleted")
    except RPCError:
        raise Unavailable(f"Temporal is unavailable; the {kind.short} was not deleted "
                          "(its sync workflow could not be stopped)") from None
    # Explicit, children first: SQLite does not enforce ON DELETE CASCADE without its pragma.
    for model in kind.children:
        session.execute(delete(model).where(getattr(model, kind.parent_key) == row_id,
                                            model.account_id == account_id))
    session.delete(get_endpoint(session, kind, account_id, row_id))
    session.commit()


# ---- the engine -------------------------------------------------------------------------------------------


def open_target(session: Session, kind: EngineKind, account_id: int, settings: Settings, row_id: int) -> HostTarget:
    """The row's engine, scoped to the account when it is shared; 422 on ``endpoint`` when the
    engine allowlist no longer lets accounts use it (settings changed since it was saved). No
    transaction stays open while the engine answers."""
    row = get_endpoint(session, kind, account_id, row_id)
    refusal = endpoint_policy_refusal(settings, row.endpoint)
    if refusal:
        session.rollback()
        raise field_error(["endpoint"], refusal, "endpoint")
    shared = engine_shared(session, settings, account_id, row.endpoint)
    target = engine_target(row, secret_box(settings), account_id if shared else None)
    session.rollback()
    return target


def probe_endpoint(session: Session, kind: EngineKind, account_id: int, user_id: int, settings: Settings,
                  row_id: int) -> ProbeOutcome:
    """Probe the engine; the outcome is recorded. An unreachable engine is an answer (``problem``),
    a ``fatal_probe_errors`` one is raised as its domain error after being recorded."""
    target = open_target(session, kind, account_id, settings, row_id)
    try:
        with docker_client(target) as client:
            values = kind.probe(client)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = kind.classify(exc, target.endpoint)
        if problem is None:
            raise
        kind.record(session, account_id, user_id, row_id, target.endpoint, problem)
        if isinstance(exc, kind.fatal_probe_errors):
            raise conflict(problem.message) from None
        return ProbeOutcome(None, problem)
    if kind.remember_probe is not None:
        kind.remember_probe(get_endpoint(session, kind, account_id, row_id), values)
        session.commit()
    kind.record(session, account_id, user_id, row_id, target.endpoint, None)
    return ProbeOutcome(values, None)


# ---- the sync workflow ------------------------------------------------------------------------------------


def _start_sync(temporal: TemporalGateway, kind: EngineKind, row: Any) -> str:
    """Start the looping workflow (replacing a one-round one that may be running); its id."""
    workflow_id = kind.workflow_id(row.id)
    temporal.call(temporal.start, kind.workflow.run, kind.sync_input(row, False), id=workflow_id,
                  id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
    return workflow_id


async def run_sync_round(temporal: TemporalGateway, kind: EngineKind, row: Any) -> dict[str, Any] | None:
    """One round now through the row's workflow: the looping workflow's ``sync_round`` update
    with auto-sync, else a one-round workflow. Its result, or None while it still runs after
    :data:`SYNC_WAIT_SECONDS`. ``row`` is detached (no session is held while waiting)."""
    try:
        if row.auto_sync:
            waiting = _round_through_update(temporal, kind, row)
        else:
            handle = await temporal.start(kind.workflow.run, kind.sync_input(row, True), id=kind.workflow_id(row.id),
                                          id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                                          execution_timeout=SINGLE_ROUND_TIMEOUT)
            waiting = handle.result()
        result = await asyncio.wait_for(waiting, SYNC_WAIT_SECONDS)
    except TimeoutError:
        return None
    except (WorkflowFailureError, WorkflowUpdateFailedError) as exc:
        raise UpstreamFailed(f"the sync round did not finish: {exc.cause}") from None
    except RPCError:
        raise Unavailable("Temporal is unavailable; no sync round was run") from None
    if is_dataclass(result) and not isinstance(result, type):
        return asdict(result)
    return dict(result or {})


async def _round_through_update(temporal: TemporalGateway, kind: EngineKind, row: Any) -> Any:
    workflow_id = kind.workflow_id(row.id)
    try:
        return await temporal.update(workflow_id, kind.workflow.sync_round)
    except RPCError as exc:
        if not is_not_found(exc):
            raise
    # The looping workflow is gone (terminated by hand in the Temporal UI): start it again.
    await temporal.start(kind.workflow.run, kind.sync_input(row, False), id=workflow_id,
                         id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return await temporal.update(workflow_id, kind.workflow.sync_round)
