"""The two kinds of managed engine endpoint (:class:`services.engines.EngineKind`), and what the
routes of both do around an engine call: record it, mask output, keep our label prefix ours.

- A Docker host's test reads the engine's version; its outcome is a ``DockerActivity``
  (``host.test``), like every container, image, network and volume action.
- A Swarm cluster's test reads the swarm through its manager (an engine that answers but is not a
  manager is refused with 409, not answered as unreachable) and remembers the swarm's id; its
  outcome is a ``SwarmEvent`` with source ``api`` (``cluster``/``test``). A cluster with a rollout
  still in progress is not deleted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapters.docker_engine import EngineProblem, NotASwarmManager, manager_info, problem_of, secret_box
from db.models import (
    DockerActivity,
    DockerContainer,
    DockerEvent,
    DockerHost,
    DockerImage,
    Secret,
    ServiceRevision,
    SwarmCluster,
    SwarmDeployment,
    SwarmEvent,
    SwarmNode,
    SwarmService,
    SwarmStack,
)
from domain.errors import conflict, field_error
from domain.masking import Masker
from services.container_specs import RESERVED_LABEL_PREFIX
from services.engines import EngineKind
from settings import Settings
from workflows.host_sync import HostSyncInput, HostSyncWorkflow, host_sync_workflow_id
from workflows.swarm_sync import SwarmSyncInput, SwarmSyncWorkflow, swarm_sync_workflow_id

#: A cluster with a rollout in one of these states is not deleted (its workflow still works on it).
ACTIVE_DEPLOYMENT_STATUSES = ("pending", "progressing", "paused", "promoting")


# ---- what the routes of both kinds share ------------------------------------------------------------------


def record_docker_activity(session: Session, account_id: int, user_id: int | None, host_id: int | None,
                           action: str, target: str, params: dict[str, Any], problem: EngineProblem | None) -> None:
    """One ``DockerActivity`` for something done (or tried) on a host or a registry."""
    session.rollback()
    session.add(DockerActivity(account_id=account_id, host_id=host_id, user_id=user_id, action=action,
                               target=target[:500], params=params, result="failure" if problem else "success",
                               error=problem.message if problem else None))
    session.commit()


def record_swarm_change(session: Session, account_id: int, user_id: int | None, cluster_id: int, kind: str,
                        action: str, target: str, params: dict[str, Any], problem: EngineProblem | None) -> None:
    """One ``SwarmEvent`` (source ``api``) for a change made (or tried) on a cluster."""
    session.rollback()
    payload: dict[str, Any] = {"params": params}
    if problem is not None:
        payload["error"] = problem.message
    session.add(SwarmEvent(account_id=account_id, cluster_id=cluster_id, source="api", event_type=kind,
                           action=action, actor_id=target[:200], user_id=user_id,
                           result="failure" if problem else "success", payload=payload))
    session.commit()


def account_masker(session: Session, settings: Settings, account_id: int) -> Masker:
    """Every secret of the account, decrypted here only to mask engine output (like a step's masker)."""
    box = secret_box(settings)
    values = []
    for token in session.scalars(select(Secret.encrypted_value).where(Secret.account_id == account_id)):
        try:
            values.append(box.decrypt(token))
        except Exception:  # noqa: BLE001, S112 - a value the keys cannot read cannot leak either
            continue
    session.rollback()
    return Masker(values)


def refuse_reserved_labels(labels: dict[str, str]) -> None:
    """Our label prefix (``devops.``: the account label among others) is set by us only."""
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise field_error(["labels", key], f"label keys starting with {RESERVED_LABEL_PREFIX!r} are "
                                               "reserved for the service")


# ---- Docker hosts --------------------------------------------------------------------------------------------


def _probe_host(client: Any) -> dict[str, Any]:
    client.api.ping()
    return client.api.version()


def _record_host_test(session: Session, account_id: int, user_id: int, host_id: int, endpoint: str,
                      problem: EngineProblem | None) -> None:
    record_docker_activity(session, account_id, user_id, host_id, "host.test", endpoint, {}, problem)


DOCKER_HOST = EngineKind(
    model=DockerHost, noun="docker host", short="host", workflow=HostSyncWorkflow,
    workflow_id=host_sync_workflow_id,
    sync_input=lambda row, single_round: HostSyncInput(host_id=row.id, account_id=row.account_id,
                                                       interval_seconds=row.sync_interval_seconds,
                                                       single_round=single_round),
    children=(DockerContainer, DockerImage, DockerEvent), parent_key="host_id",
    counted=(("containers", DockerContainer), ("images", DockerImage)),
    probe=_probe_host, record=_record_host_test, classify=problem_of)


# ---- Swarm clusters ------------------------------------------------------------------------------------------


def _probe_cluster(client: Any) -> dict[str, Any]:
    client.api.ping()
    info = manager_info(client)
    swarm = client.api.inspect_swarm()
    nodes = client.api.nodes()
    return {"swarm_id": swarm.get("ID"), "node_id": (info.get("Swarm") or {}).get("NodeID"), "nodes": len(nodes),
            "managers": sum(1 for n in nodes if (n.get("Spec") or {}).get("Role") == "manager"),
            "docker_version": info.get("ServerVersion")}


def _record_cluster_test(session: Session, account_id: int, user_id: int, cluster_id: int, endpoint: str,
                         problem: EngineProblem | None) -> None:
    record_swarm_change(session, account_id, user_id, cluster_id, "cluster", "test", endpoint, {}, problem)


def _classify_cluster(exc: BaseException, endpoint: str) -> EngineProblem | None:
    if isinstance(exc, NotASwarmManager):
        return EngineProblem("conflict", str(exc))
    return problem_of(exc, endpoint)


def _no_rollout_in_progress(session: Session, cluster_id: int) -> None:
    active = session.scalar(select(func.count()).select_from(SwarmDeployment).where(
        SwarmDeployment.cluster_id == cluster_id, SwarmDeployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES)))
    session.rollback()
    if active:
        raise conflict(f"the cluster has {active} rollout(s) in progress: abort or finish them first")


def _remember_swarm_id(row: Any, values: dict[str, Any]) -> None:
    row.swarm_id = values["swarm_id"]


SWARM_CLUSTER = EngineKind(
    model=SwarmCluster, noun="swarm cluster", short="cluster", workflow=SwarmSyncWorkflow,
    workflow_id=swarm_sync_workflow_id,
    sync_input=lambda row, single_round: SwarmSyncInput(cluster_id=row.id, account_id=row.account_id,
                                                        interval_seconds=row.sync_interval_seconds,
                                                        single_round=single_round),
    children=(SwarmEvent, SwarmDeployment, ServiceRevision, SwarmNode, SwarmService, SwarmStack),
    parent_key="cluster_id", counted=(("nodes", SwarmNode), ("services", SwarmService)), probe=_probe_cluster, record=_record_cluster_test, classify=_classify_cluster,
    fatal_probe_errors=(NotASwarmManager,), delete_guard=_no_rollout_in_progress,
    remember_probe=_remember_swarm_id)
