"""Rollouts on Docker Swarm (the seed's ``BlueGreenStrategy`` and ``CanaryStrategy``): the
activities ``RolloutWorkflow`` calls.

Every activity takes a deployment id and loads the rest (cluster endpoint, TLS material, the
revision's spec) from the database, so no secret travels through Temporal. Every one is
idempotent: services have deterministic names (``<service>-canary``, ``<service>-green``), a
stable service updated for a deployment carries the label ``devops.deployment=<id>`` so a retry
sees the update already done, a revision is recorded once per deployment, and events carry a
dedupe key made by the workflow.

Errors: a Docker hiccup raises a plain exception (retried by the workflow's policy); what the
user has to fix (no such service, an image the cluster does not have, a cluster that is gone)
raises ``ApplicationError`` of type ``RolloutUserError``, non-retryable, saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import StepInput, step_failed
from adapters.docker_engine import HostTarget, docker_client, engine_target, secret_box
from adapters.network_targets import image_registry_problem
from db.models import ServiceRevision, SwarmCluster, SwarmDeployment, SwarmEvent
from domain.rollouts import (  # noqa: F401  (re-exported for the workflow)
    achieved_weight,
    canary_name,
    canary_replicas,
    green_name,
    parse_duration,
)
from settings import Settings

ROLLOUT_USER_ERROR = "RolloutUserError"
NON_RETRYABLE_TYPES = [ROLLOUT_USER_ERROR]
DEPLOYMENT_LABEL = "devops.deployment"
ROLE_LABEL = "devops.rollout.role"
ROUTER_LABEL = "devops.router"
FINAL_STATUSES = frozenset({"completed", "aborted", "failed", "rolled_back"})
_NANO = 1_000_000_000


def user_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=ROLLOUT_USER_ERROR, non_retryable=True)


# ---- inputs and results ------------------------------------------------------------------------


@dataclass
class DeploymentRef:
    deployment_id: int
    account_id: int


@dataclass
class RolloutPlan:
    """What the workflow needs from the row (no secrets)."""

    deployment_id: int
    cluster_id: int
    service: str
    strategy: str
    config: dict[str, Any]
    status: str


@dataclass
class PrepareResult:
    revision_id: int
    revision_number: int
    previous_revision_id: int | None
    image: str
    image_digest: str | None
    stable_replicas: int
    healthcheck_seconds: float  # interval × retries (+ timeout) of the new image's HEALTHCHECK


@dataclass
class ServiceInput:
    deployment_id: int
    account_id: int
    name: str
    replicas: int = 1
    role: str = "canary"  # canary | green
    aliases: list[str] = field(default_factory=list)  # extra network aliases on the stable's networks


@dataclass
class WaitHealthyInput:
    deployment_id: int
    account_id: int
    name: str
    replicas: int
    timeout_seconds: float = 120.0


@dataclass
class WaitHealthyResult:
    healthy: bool
    running: int
    detail: str = ""


@dataclass
class UpdateStableInput:
    deployment_id: int
    account_id: int
    revision_id: int
    parallelism: int = 1
    delay_seconds: float = 0.0
    monitor_seconds: float = 5.0
    order: str = "start-first"
    failure_action: str = "rollback"


@dataclass
class UpdateStableResult:
    already_done: bool
    requested_at: str


@dataclass
class WaitUpdateInput:
    deployment_id: int
    account_id: int
    requested_at: str
    timeout_seconds: float = 600.0


@dataclass
class WaitUpdateResult:
    state: str  # completed | rollback_completed | paused | rollback_paused | timeout
    message: str = ""


@dataclass
class MeasureInput:
    deployment_id: int
    account_id: int
    name: str  # the service measured (the canary, or green)
    provider: str  # tasks | http | prometheus
    http: dict[str, Any] = field(default_factory=dict)
    prometheus: dict[str, Any] = field(default_factory=dict)  # {query, min?, max?}


@dataclass
class Measurement:
    value: str  # pass | fail | error
    detail: str = ""


@dataclass
class SwitchTrafficInput:
    deployment_id: int
    account_id: int
    to: str  # green | blue
    alias: str
    timeout_seconds: float = 120.0


@dataclass
class RolloutEventInput:
    deployment_id: int
    account_id: int
    key: str
    event_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    result: str | None = None
    status: str | None = None
    current_step: int | None = None
    state: dict[str, Any] | None = None
    error: str | None = None
    revision_id: int | None = None
    finished: bool = False


@dataclass
class DeployStepPlan:
    deployment_id: int
    workflow_id: str


# ---- the activities ------------------------------------------------------------------------------


class RolloutActivities:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = session_factory

    # -- bookkeeping

    @activity.defn(name="rollout_load")
    async def load(self, ref: DeploymentRef) -> RolloutPlan:
        def work() -> RolloutPlan:
            with self._sessions() as session:
                row = self._deployment(session, ref)
                return RolloutPlan(deployment_id=row.id, cluster_id=row.cluster_id, service=row.service_name,
                                   strategy=row.strategy, config=dict(row.config or {}), status=row.status)
        return await asyncio.to_thread(work)

    @activity.defn(name="rollout_record")
    async def record(self, inp: RolloutEventInput) -> None:
        """A rollout event (once per key) and the deployment's read model."""
        await asyncio.to_thread(self._record, inp)

    def _record(self, inp: RolloutEventInput) -> None:
        with self._sessions.begin() as session:
            row = self._deployment(session, DeploymentRef(inp.deployment_id, inp.account_id))
            now = datetime.now(UTC)
            if inp.status is not None:
                row.status = inp.status
                if inp.status != "pending" and row.started_at is None:
                    row.started_at = now
            if inp.current_step is not None:
                row.current_step = inp.current_step
            if inp.state is not None:
                row.state = inp.state
            if inp.error is not None:
                row.error = inp.error
            if inp.revision_id is not None:
                row.revision_id = inp.revision_id
            if inp.finished and row.finished_at is None:
                row.finished_at = now
            key = f"rollout-{inp.deployment_id}-{inp.key}"
            exists = session.scalar(select(SwarmEvent.id).where(SwarmEvent.cluster_id == row.cluster_id,
                                                                SwarmEvent.dedupe_key == key))
            if exists is None:
                session.add(SwarmEvent(account_id=row.account_id, cluster_id=row.cluster_id, deployment_id=row.id,
                                       source="rollout", event_type=inp.event_type, action=inp.event_type,
                                       actor_id=row.service_name, result=inp.result, payload=inp.payload,
                                       dedupe_key=key))

    # -- revisions

    @activity.defn(name="rollout_prepare")
    async def prepare(self, ref: DeploymentRef) -> PrepareResult:
        """Record the revision being rolled out (once per deployment) and what it replaces."""
        return await asyncio.to_thread(self._prepare, ref)

    def _prepare(self, ref: DeploymentRef) -> PrepareResult:
        with self._sessions() as session:
            row = self._deployment(session, ref)
            cluster_id, service_name, config = row.cluster_id, row.service_name, dict(row.config or {})
            revision_id, previous_id = row.revision_id, row.previous_revision_id
        with self._client(ref) as client:
            stable = self._service(client, service_name)
            stable_spec = stable.attrs["Spec"]
            replicas = _replicas(stable_spec)
            if revision_id is not None:  # a retry, or a rollback to a stored revision
                with self._sessions() as session:
                    revision = session.get(ServiceRevision, revision_id)
                    assert revision is not None
                    if previous_id is None:
                        previous_id = self._snapshot_current(session, cluster_id, ref.account_id, service_name,
                                                             stable_spec, client)
                        session.get(SwarmDeployment, ref.deployment_id).previous_revision_id = previous_id
                        session.commit()
                    health = _healthcheck_seconds(client, revision.image)
                    return PrepareResult(revision_id=revision.id, revision_number=revision.number,
                                         previous_revision_id=previous_id, image=revision.image,
                                         image_digest=revision.image_digest, stable_replicas=replicas,
                                         healthcheck_seconds=health)
            image = str(config.get("image") or "")
            digest = _resolve_image(client, image)
            health = _healthcheck_seconds(client, image)
            spec = _strip_rollout_labels(copy.deepcopy(stable_spec))
            spec["TaskTemplate"]["ContainerSpec"]["Image"] = image
            env = config.get("env") or {}
            if env:
                current = [e for e in spec["TaskTemplate"]["ContainerSpec"].get("Env") or []
                           if e.split("=", 1)[0] not in env]
                spec["TaskTemplate"]["ContainerSpec"]["Env"] = current + [f"{k}={v}" for k, v in env.items()]
            for attempt in range(5):
                with self._sessions() as session:
                    previous_id = self._snapshot_current(session, cluster_id, ref.account_id, service_name,
                                                         stable_spec, client)
                    number = _next_number(session, cluster_id, service_name)
                    revision = ServiceRevision(account_id=ref.account_id, cluster_id=cluster_id,
                                               service_name=service_name, number=number, image=image,
                                               image_digest=digest, spec=spec)
                    session.add(revision)
                    try:
                        session.flush()
                    except IntegrityError:
                        session.rollback()
                        if attempt == 4:
                            raise
                        continue
                    deployment = session.get(SwarmDeployment, ref.deployment_id)
                    deployment.revision_id, deployment.previous_revision_id = revision.id, previous_id
                    session.commit()
                    return PrepareResult(revision_id=revision.id, revision_number=number,
                                         previous_revision_id=previous_id, image=image, image_digest=digest,
                                         stable_replicas=replicas, healthcheck_seconds=health)
        raise AssertionError("unreachable")

    def _snapshot_current(self, session: Session, cluster_id: int, account_id: int, service_name: str,
                          stable_spec: dict[str, Any], client: docker.DockerClient) -> int:
        """The stored revision equal to the stable's current spec, recorded now if there is none."""
        spec = _strip_rollout_labels(copy.deepcopy(stable_spec))
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        latest = session.scalars(select(ServiceRevision).where(
            ServiceRevision.cluster_id == cluster_id, ServiceRevision.service_name == service_name,
        ).order_by(ServiceRevision.number.desc())).first()
        if latest is not None and _same_template(latest.spec, spec):
            return latest.id
        try:
            digest = _resolve_image(client, image)
        except ApplicationError:
            digest = None
        revision = ServiceRevision(account_id=account_id, cluster_id=cluster_id, service_name=service_name,
                                   number=_next_number(session, cluster_id, service_name), image=image,
                                   image_digest=digest, spec=spec)
        session.add(revision)
        session.flush()
        return revision.id

    # -- services

    @activity.defn(name="rollout_ensure_service")
    async def ensure_service(self, inp: ServiceInput) -> int:
        """Create ``inp.name`` from the deployment's revision beside the stable service (on its
        networks, with the aliases asked), or scale it if it exists. Returns the replicas."""
        return await asyncio.to_thread(self._ensure_service, inp)

    def _ensure_service(self, inp: ServiceInput) -> int:
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        with self._sessions() as session:
            row = self._deployment(session, ref)
            service_name = row.service_name
            revision = session.get(ServiceRevision, row.revision_id) if row.revision_id else None
            if revision is None:
                raise user_error(f"deployment {row.id} has no revision recorded yet")
            spec = copy.deepcopy(revision.spec)
        with self._client(ref) as client:
            existing = self._find(client, inp.name)
            if existing is not None:
                labels = existing.attrs["Spec"].get("Labels") or {}
                if labels.get(DEPLOYMENT_LABEL) == str(inp.deployment_id):
                    _scale(existing, inp.replicas)
                    return inp.replicas
                if labels.get(ROLE_LABEL) != inp.role:
                    raise user_error(f"a service named {inp.name} exists and was not made by a rollout; "
                                     "rename or remove it first")
                if labels.get(ROUTER_LABEL) == "active":
                    raise user_error(f"{inp.name} carries the traffic since deployment {labels.get(DEPLOYMENT_LABEL)}; "
                                     f"roll out to {inp.name} itself, or move traffic back before a new "
                                     "blue/green rollout of this service")
                with contextlib.suppress(NotFound):  # left by an earlier rollout that never cleaned up
                    existing.remove()
            stable = self._service(client, service_name)
            template = spec["TaskTemplate"]
            networks = []
            for net in stable.attrs["Spec"].get("TaskTemplate", {}).get("Networks") or []:
                aliases = sorted(set(inp.aliases))
                networks.append({"Target": net["Target"], "Aliases": aliases})
            template["Networks"] = networks
            container = template.setdefault("ContainerSpec", {})
            container["Labels"] = {**(container.get("Labels") or {}), DEPLOYMENT_LABEL: str(inp.deployment_id),
                                   ROLE_LABEL: inp.role}
            template.pop("ForceUpdate", None)
            labels = {**(spec.get("Labels") or {}), DEPLOYMENT_LABEL: str(inp.deployment_id), ROLE_LABEL: inp.role}
            if inp.role == "green":
                labels[ROUTER_LABEL] = "preview"
            endpoint = {"Mode": (spec.get("EndpointSpec") or {}).get("Mode", "vip")}  # never the stable's ports
            try:
                client.api.create_service(template, name=inp.name, labels=labels,
                                          mode={"Replicated": {"Replicas": inp.replicas}},
                                          endpoint_spec=endpoint,
                                          # an alias switch restarts tasks: never below full capacity
                                          update_config={"Parallelism": 1, "Order": "start-first",
                                                         "FailureAction": "pause"})
            except APIError as exc:
                if exc.status_code == 409:  # a previous try created it
                    _scale(self._service(client, inp.name), inp.replicas)
                    return inp.replicas
                raise _problem(f"create service {inp.name}", exc) from None
            return inp.replicas

    @activity.defn(name="rollout_scale_service")
    async def scale_service(self, inp: ServiceInput) -> int:
        def work() -> int:
            with self._client(DeploymentRef(inp.deployment_id, inp.account_id)) as client:
                service = self._find(client, inp.name)
                if service is not None:
                    _scale(service, inp.replicas)
                return inp.replicas
        return await asyncio.to_thread(work)

    @activity.defn(name="rollout_remove_service")
    async def remove_service(self, inp: ServiceInput) -> bool:
        """Remove ``inp.name`` if it exists (never the stable service)."""
        def work() -> bool:
            with self._client(DeploymentRef(inp.deployment_id, inp.account_id)) as client:
                service = self._find(client, inp.name)
                if service is None:
                    return False
                if (service.attrs["Spec"].get("Labels") or {}).get(ROLE_LABEL) not in ("canary", "green"):
                    raise user_error(f"refusing to remove {inp.name}: it was not created by a rollout")
                with contextlib.suppress(NotFound):
                    service.remove()
                return True
        return await asyncio.to_thread(work)

    @activity.defn(name="rollout_wait_healthy")
    async def wait_healthy(self, inp: WaitHealthyInput) -> WaitHealthyResult:
        """Until ``replicas`` tasks of the service run (a task with a HEALTHCHECK only reaches
        ``running`` once healthy), or a task fails, or the timeout; heartbeats meanwhile."""
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        deadline = time.monotonic() + inp.timeout_seconds
        while True:
            result = await asyncio.to_thread(self._health_once, ref, inp.name, inp.replicas)
            if result.healthy or result.detail:
                return result
            if time.monotonic() > deadline:
                return WaitHealthyResult(False, result.running,
                                         f"{result.running}/{inp.replicas} tasks of {inp.name} healthy after "
                                         f"{inp.timeout_seconds:g} s")
            activity.heartbeat(result.running)
            await asyncio.sleep(0.5)

    def _health_once(self, ref: DeploymentRef, name: str, replicas: int) -> WaitHealthyResult:
        with self._client(ref) as client:
            service = self._find(client, name)
            if service is None:
                raise user_error(f"service {name} is gone: it was removed while the rollout waited for it")
            tasks = service.tasks()
            failed = _failed_tasks(tasks)
            if failed:
                return WaitHealthyResult(False, _running(tasks), failed[0])
            running = _running(tasks)
            return WaitHealthyResult(running >= replicas and _desired(tasks) <= replicas or replicas == 0,
                                     running)

    # -- the stable service

    @activity.defn(name="rollout_update_stable")
    async def update_stable(self, inp: UpdateStableInput) -> UpdateStableResult:
        """Swarm's own update of the stable service to a revision: explicit parallelism, delay,
        order, failure action and monitor window. Done once per deployment (label)."""
        return await asyncio.to_thread(self._update_stable, inp)

    def _update_stable(self, inp: UpdateStableInput) -> UpdateStableResult:
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        with self._sessions() as session:
            row = self._deployment(session, ref)
            service_name = row.service_name
            revision = session.get(ServiceRevision, inp.revision_id)
            assert revision is not None
            spec = copy.deepcopy(revision.spec)
        with self._client(ref) as client:
            stable = self._service(client, service_name)
            current = stable.attrs["Spec"]
            if (current.get("Labels") or {}).get(DEPLOYMENT_LABEL) == str(inp.deployment_id):
                return UpdateStableResult(True, stable.attrs.get("UpdatedAt", ""))
            template = spec["TaskTemplate"]
            template["Networks"] = current.get("TaskTemplate", {}).get("Networks") or template.get("Networks") or []
            template["ForceUpdate"] = int(current.get("TaskTemplate", {}).get("ForceUpdate") or 0)
            labels = {**(current.get("Labels") or {}), DEPLOYMENT_LABEL: str(inp.deployment_id)}
            labels.pop(ROLE_LABEL, None)
            update_config = {"Parallelism": inp.parallelism, "Delay": int(inp.delay_seconds * _NANO),
                             "FailureAction": inp.failure_action, "Monitor": int(inp.monitor_seconds * _NANO),
                             "Order": inp.order, "MaxFailureRatio": 0}
            rollback_config = {"Parallelism": inp.parallelism, "Delay": 0, "FailureAction": "pause",
                               "Monitor": int(inp.monitor_seconds * _NANO), "Order": inp.order}
            try:
                client.api.update_service(stable.id, stable.version, task_template=template, name=service_name,
                                          labels=labels, update_config=update_config,
                                          rollback_config=rollback_config, fetch_current_spec=True)
            except APIError as exc:
                raise _problem(f"update service {service_name}", exc) from None
            stable.reload()
            return UpdateStableResult(False, stable.attrs.get("UpdatedAt", ""))

    @activity.defn(name="rollout_wait_update")
    async def wait_update(self, inp: WaitUpdateInput) -> WaitUpdateResult:
        """Follow the stable service's UpdateStatus until Swarm says how the update ended."""
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        deadline = time.monotonic() + inp.timeout_seconds
        with self._sessions() as session:
            service_name = self._deployment(session, ref).service_name
        quiet_since: float | None = None
        while True:
            status, converged = await asyncio.to_thread(self._update_status, ref, service_name, inp.requested_at)
            if status is not None:
                state = status.get("State", "")
                if state in ("completed", "rollback_completed", "paused", "rollback_paused"):
                    return WaitUpdateResult(state, status.get("Message", ""))
                quiet_since = None
            elif converged:  # no UpdateStatus at all: nothing changed for Swarm (same spec)
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 3:
                    return WaitUpdateResult("completed", "nothing to update")
            if time.monotonic() > deadline:
                return WaitUpdateResult("timeout", f"the update did not finish in {inp.timeout_seconds:g} s")
            activity.heartbeat(status.get("State") if status else "")
            await asyncio.sleep(0.5)

    def _update_status(self, ref: DeploymentRef, service_name: str,
                       requested_at: str) -> tuple[dict[str, Any] | None, bool]:
        with self._client(ref) as client:
            service = self._service(client, service_name)
            status = service.attrs.get("UpdateStatus")
            if status and requested_at and _docker_time(status.get("StartedAt")) < _docker_time(requested_at) - 2:
                status = None  # the status of an earlier update
            tasks = service.tasks()
            converged = _running(tasks) >= _replicas(service.attrs["Spec"])
            return status, converged

    # -- analysis

    @activity.defn(name="rollout_measure")
    async def measure(self, inp: MeasureInput) -> Measurement:
        """One measurement of an analysis metric: ``tasks`` (every task healthy by its
        HEALTHCHECK, none failed, restarted, exited non-zero or killed for memory) or ``http``
        (a short-lived busybox container on the service's network fetching a URL)."""
        if inp.provider == "http":
            return await asyncio.to_thread(self._probe, inp)
        if inp.provider == "prometheus":
            return await asyncio.to_thread(query_prometheus, self._settings.prometheus_url, inp.name, inp.prometheus)
        return await asyncio.to_thread(self._measure_tasks, inp)

    def _measure_tasks(self, inp: MeasureInput) -> Measurement:
        with self._client(DeploymentRef(inp.deployment_id, inp.account_id)) as client:
            service = self._find(client, inp.name)
            if service is None:
                return Measurement("error", f"service {inp.name} does not exist")
            replicas = _replicas(service.attrs["Spec"])
            tasks = service.tasks()
            failed = _failed_tasks(tasks)
            if failed:
                return Measurement("fail", "; ".join(failed[:3]))
            unhealthy = _unhealthy_containers(client, tasks)
            if unhealthy:
                return Measurement("fail", "; ".join(unhealthy[:3]))
            running = _running(tasks)
            if running < replicas:
                return Measurement("error", f"{running}/{replicas} tasks running")
            return Measurement("pass", f"{running}/{replicas} tasks healthy")

    def _probe(self, inp: MeasureInput) -> Measurement:
        """Fetch the URL from a short-lived container on the service's (attachable) network: from
        every running task's address (what the name load-balances to, and each one must answer),
        or from ``http.host`` when given."""
        http = inp.http or {}
        port = int(http.get("port", 80))
        path = str(http.get("path", "/"))
        if not path.startswith("/"):
            path = "/" + path
        host = str(http.get("host") or inp.name)
        timeout = int(parse_duration(http.get("timeout", 5)))
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        with self._client(ref) as client:
            service = self._find(client, inp.name)
            if service is None:
                return Measurement("error", f"service {inp.name} does not exist")
            networks = [n["Target"] for n in service.attrs["Spec"].get("TaskTemplate", {}).get("Networks") or []]
            if not networks:
                return Measurement("error", f"service {inp.name} is on no network to probe it from")
            image = str(http.get("image") or service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
            targets = [host] if http.get("host") else _task_addresses(service.tasks(), networks[0])
            if not targets:
                return Measurement("error", f"no running task of {inp.name} to probe")
            # Values reach the shell as arguments and environment, never as script text.
            script = ('for target in "$@"; do timeout "$PROBE_TIMEOUT" wget -q --header "Host: $PROBE_HOST" -O- '
                      '"http://$target:$PROBE_PORT$PROBE_PATH" >/dev/null || { echo "$target failed"; exit 1; }; done')
            name = f"rollout-probe-{inp.deployment_id}-{int(time.time() * 1000) % 10**9}"
            try:
                container = client.containers.run(
                    image, ["sh", "-c", script, "probe", *targets], name=name, network=networks[0], detach=True,
                    environment={"PROBE_TIMEOUT": str(timeout), "PROBE_HOST": host, "PROBE_PORT": str(port),
                                 "PROBE_PATH": path},
                    labels={DEPLOYMENT_LABEL: str(inp.deployment_id), ROLE_LABEL: "probe"})
            except APIError as exc:
                return Measurement("error", f"the probe container could not start: {exc.explanation or exc} "
                                            "(the network must be an attachable overlay)")
            try:
                status = container.wait(timeout=timeout * len(targets) + 15)
                output = container.logs().decode(errors="replace")[-300:]
            except requests.RequestException as exc:
                return Measurement("error", f"the probe did not finish: {exc}")
            finally:
                with contextlib.suppress(APIError):
                    container.remove(force=True)
            if status.get("StatusCode") == 0:
                return Measurement("pass", f"GET {path} answered by {len(targets)} target(s)")
            return Measurement("fail", f"GET http://{host}:{port}{path} failed: {' '.join(output.split())}")

    # -- blue/green

    @activity.defn(name="rollout_switch_traffic")
    async def switch_traffic(self, inp: SwitchTrafficInput) -> None:
        """Give the network alias and ``devops.router=active`` to green (or back to blue), and
        take them from the other; an update only where something changes."""
        await asyncio.to_thread(self._switch, inp)

    def _switch(self, inp: SwitchTrafficInput) -> None:
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        with self._sessions() as session:
            service_name = self._deployment(session, ref).service_name
        with self._client(ref) as client:
            blue = self._service(client, service_name)
            green = self._find(client, green_name(service_name))
            if green is None:
                raise user_error(f"service {green_name(service_name)} is gone: it was removed during the rollout")
            active, inactive = (green, blue) if inp.to == "green" else (blue, green)
            # The side taking traffic first, and its tasks settled, before the other lets go.
            if _set_alias(active, inp.alias, present=True, router="active"):
                _await_update(active, inp.timeout_seconds)
            if _set_alias(inactive, inp.alias, present=False, router="inactive"):
                _await_update(inactive, inp.timeout_seconds)

    # -- the pipeline's deploy step

    @activity.defn(name="rollout_create_for_step")
    async def create_for_step(self, inp: StepInput) -> DeployStepPlan:
        """The ``SwarmDeployment`` of a ``deploy`` step attempt (created once per run, step and
        attempt); a bad ``with`` fails the step with a message naming the field."""
        return await asyncio.to_thread(self._create_for_step, inp)

    def _create_for_step(self, inp: StepInput) -> DeployStepPlan:
        from domain.rollouts import rollout_problems

        params = inp.params
        key = f"{inp.step_id}#{inp.attempt}"
        with self._sessions.begin() as session:
            for row in session.scalars(select(SwarmDeployment).where(SwarmDeployment.pipeline_run_id == inp.run_id,
                                                                     SwarmDeployment.account_id == inp.account_id)):
                if (row.config or {}).get("pipeline_step") == key:
                    return DeployStepPlan(row.id, row.workflow_id or "")
            cluster_ref = params.get("cluster")
            query = select(SwarmCluster).where(SwarmCluster.account_id == inp.account_id)
            if isinstance(cluster_ref, int) or (isinstance(cluster_ref, str) and cluster_ref.isdigit()):
                cluster = session.scalar(query.where(SwarmCluster.id == int(cluster_ref)))
            else:
                cluster = session.scalar(query.where(SwarmCluster.name == str(cluster_ref or "")))
            if cluster is None:
                raise step_failed(f"with.cluster: no swarm cluster {cluster_ref!r} in this account")
            for name in ("service", "image", "strategy"):
                if not isinstance(params.get(name), str) or not params[name].strip():
                    raise step_failed(f"with.{name}: a deploy step needs it (text)")
            registry_problem = image_registry_problem(params["image"], self._settings.private_targets_allowed)
            if registry_problem:  # an image from an expression is only known now
                raise step_failed(f"with.image: {registry_problem}")
            problems = rollout_problems(params["strategy"], params.get("steps"), params.get("blue_green"),
                                        params.get("rolling"))
            if problems:
                raise step_failed("; ".join(f"with.{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
            config: dict[str, Any] = {"image": params["image"], "strategy": params["strategy"],
                                      "steps": params.get("steps") or [], "env": params.get("env") or {},
                                      "pipeline_step": key}
            for name in ("blue_green", "rolling", "progress_deadline_seconds"):
                if params.get(name) is not None:
                    config[name] = params[name]
            row = SwarmDeployment(account_id=inp.account_id, cluster_id=cluster.id, service_name=params["service"],
                                  strategy=params["strategy"], config=config, pipeline_run_id=inp.run_id)
            session.add(row)
            session.flush()
            row.workflow_id = f"rollout-{row.id}"
            return DeployStepPlan(row.id, row.workflow_id)

    # -- helpers

    def _deployment(self, session: Session, ref: DeploymentRef) -> SwarmDeployment:
        row = session.get(SwarmDeployment, ref.deployment_id)
        if row is None or row.account_id != ref.account_id:
            raise user_error(f"deployment {ref.deployment_id} does not exist")
        return row

    @contextmanager
    def _client(self, ref: DeploymentRef) -> Iterator[docker.DockerClient]:
        with self._sessions() as session:
            row = self._deployment(session, ref)
            cluster = session.get(SwarmCluster, row.cluster_id)
            if cluster is None:
                raise user_error(f"the cluster of deployment {ref.deployment_id} was deleted")
            target = cluster_target(cluster, self._settings)
        try:
            with docker_client(target) as client:
                yield client
        except (requests.RequestException, docker.errors.DockerException) as exc:
            if isinstance(exc, APIError):
                raise
            raise RuntimeError(f"the swarm manager at {target.endpoint} cannot be reached: {exc}") from None

    def _find(self, client: docker.DockerClient, name: str):
        try:
            return client.services.get(name)
        except NotFound:
            return None

    def _service(self, client: docker.DockerClient, name: str):
        service = self._find(client, name)
        if service is None:
            raise user_error(f"service {name!r} does not exist on the cluster; create it first "
                             "(a rollout changes an existing service)")
        return service


def cluster_target(cluster: SwarmCluster, settings: Settings) -> HostTarget:
    return engine_target(cluster, secret_box(settings))


# ---- pure helpers over Docker's shapes ---------------------------------------------------------


def _replicas(spec: dict[str, Any]) -> int:
    return int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0)


def _desired(tasks: list[dict[str, Any]]) -> int:
    return sum(1 for t in tasks if t.get("DesiredState") == "running")


def _running(tasks: list[dict[str, Any]]) -> int:
    return sum(1 for t in tasks
               if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running")


def _failed_tasks(tasks: list[dict[str, Any]]) -> list[str]:
    """Why tasks failed: failed/rejected states, non-zero exits, OOM kills, unhealthy containers."""
    problems = []
    for task in tasks:
        status = task.get("Status") or {}
        state = status.get("State", "")
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        err = status.get("Err") or ""
        slot = task.get("Slot", "?")
        if state in ("failed", "rejected"):
            kind = "OOM" if "oom" in err.lower() else state
            problems.append(f"task {slot} {kind}: {err or status.get('Message', '')}".strip())
        elif state in ("complete", "shutdown") and exit_code not in (None, 0) and task.get("DesiredState") == "running":
            problems.append(f"task {slot} exited with code {exit_code}")
    return problems


def _unhealthy_containers(client: docker.DockerClient, tasks: list[dict[str, Any]]) -> list[str]:
    """Running tasks whose container reports unhealthy (containers on this manager only)."""
    problems = []
    for task in tasks:
        status = task.get("Status") or {}
        if task.get("DesiredState") != "running" or status.get("State") != "running":
            continue
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        if not container_id:
            continue
        try:
            state = client.api.inspect_container(container_id).get("State") or {}
        except APIError:
            continue  # on another node, or already gone
        health = (state.get("Health") or {}).get("Status")
        if health == "unhealthy":
            problems.append(f"task {task.get('Slot', '?')} unhealthy")
        if state.get("OOMKilled"):
            problems.append(f"task {task.get('Slot', '?')} OOM killed")
    return problems


def _task_addresses(tasks: list[dict[str, Any]], network_id: str) -> list[str]:
    addresses = []
    for task in tasks:
        if task.get("DesiredState") != "running" or (task.get("Status") or {}).get("State") != "running":
            continue
        for attachment in task.get("NetworksAttachments") or []:
            if (attachment.get("Network") or {}).get("ID") == network_id:
                addresses += [a.split("/", 1)[0] for a in attachment.get("Addresses") or []]
    return addresses


def _scale(service, replicas: int) -> None:
    spec = service.attrs["Spec"]
    if _replicas(spec) == replicas:
        return
    try:
        service.scale(replicas)
    except APIError as exc:
        raise _problem(f"scale service {spec.get('Name')}", exc) from None


def _set_alias(service, alias: str, *, present: bool, router: str) -> bool:
    """Add or remove the alias (and set the router label); True when tasks are being replaced."""
    spec = service.attrs["Spec"]
    template = copy.deepcopy(spec.get("TaskTemplate") or {})
    networks = template.get("Networks") or []
    changed = False
    for net in networks:
        aliases = list(net.get("Aliases") or [])
        if present and alias not in aliases:
            aliases.append(alias)
            changed = True
        if not present and alias in aliases:
            aliases.remove(alias)
            changed = True
        net["Aliases"] = aliases
    restarts = changed
    labels = dict(spec.get("Labels") or {})
    if labels.get(ROUTER_LABEL) != router:
        labels[ROUTER_LABEL] = router
        changed = True
    if not changed:
        return False
    kwargs: dict[str, Any] = {"labels": labels, "name": spec["Name"], "fetch_current_spec": True}
    if networks:
        kwargs["task_template"] = template
    try:
        service.client.api.update_service(service.id, service.version, **kwargs)
    except APIError as exc:
        raise _problem(f"switch traffic on {spec['Name']}", exc) from None
    return restarts and _replicas(spec) > 0


def _await_update(service, timeout: float) -> None:
    """Until Swarm reports the service's update completed (its tasks replaced and healthy)."""
    service.reload()
    requested = _docker_time(service.attrs.get("UpdatedAt"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.reload()
        status = service.attrs.get("UpdateStatus") or {}
        if status and _docker_time(status.get("StartedAt")) >= requested - 2:
            if status.get("State") == "completed":
                return
            if status.get("State") in ("paused", "rollback_completed", "rollback_paused"):
                raise RuntimeError(f"Swarm's update of {service.name} ended {status['State']}: "
                                   f"{status.get('Message', '')}")
        time.sleep(0.5)
    raise RuntimeError(f"the update of {service.name} did not finish in {timeout:g} s")


def _resolve_image(client: docker.DockerClient, image: str) -> str:
    if not image:
        raise user_error("no image given for the new revision")
    try:
        found = client.images.get(image)
    except ImageNotFound:
        raise user_error(f"image {image!r} is not on the swarm manager; push it to a registry the cluster "
                         "can pull from, or build it there first") from None
    digests = found.attrs.get("RepoDigests") or []
    return digests[0].split("@", 1)[-1] if digests else found.id


def _healthcheck_seconds(client: docker.DockerClient, image: str) -> float:
    try:
        config = client.images.get(image).attrs.get("Config") or {}
    except (ImageNotFound, APIError):
        return 0.0
    check = config.get("Healthcheck") or {}
    if not check.get("Test") or check.get("Test") == ["NONE"]:
        return 0.0
    interval = (check.get("Interval") or 30 * _NANO) / _NANO
    timeout = (check.get("Timeout") or 30 * _NANO) / _NANO
    retries = check.get("Retries") or 3
    start = (check.get("StartPeriod") or 0) / _NANO
    return start + interval * retries + timeout


def _strip_rollout_labels(spec: dict[str, Any]) -> dict[str, Any]:
    labels = dict(spec.get("Labels") or {})
    for key in (DEPLOYMENT_LABEL, ROLE_LABEL):
        labels.pop(key, None)
    spec["Labels"] = labels
    spec.get("TaskTemplate", {}).pop("ForceUpdate", None)
    return spec


def _same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def key(spec: dict[str, Any]) -> Any:
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        return (container.get("Image"), sorted(container.get("Env") or []), container.get("Command"),
                container.get("Args"))
    return key(a) == key(b)


def _next_number(session: Session, cluster_id: int, service_name: str) -> int:
    latest = session.scalar(select(func.max(ServiceRevision.number)).where(
        ServiceRevision.cluster_id == cluster_id, ServiceRevision.service_name == service_name))
    return int(latest or 0) + 1


def _docker_time(text: str | None) -> float:
    if not text:
        return 0.0
    base, _, rest = text.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    try:
        moment = datetime.strptime(base.rstrip("Z"), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _problem(action: str, exc: APIError) -> Exception:
    """A user error for what the engine refuses as bad input; anything else is retried."""
    code = exc.status_code or 500
    detail = str(exc.explanation or exc)
    if 400 <= code < 500 and code != 409:
        return user_error(f"Swarm refused to {action}: {detail}")
    return RuntimeError(f"Swarm failed to {action}: {detail}")


def query_prometheus(base_url: str, service: str, spec: dict[str, Any], timeout: float = 5.0) -> Measurement:
    """One Flagger-style Prometheus check: an instant query (``{service}`` stands for the service
    measured) whose first sample must lie within ``min``..``max``. No URL configured, an error or
    an empty result is ``error`` (inconclusive), never a pass."""
    if not base_url:
        return Measurement("error", "no Prometheus URL is configured (DEVOPS_PROMETHEUS_URL)")
    query = str(spec.get("query", "")).replace("{service}", service)
    try:
        response = requests.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout)
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        return Measurement("error", f"Prometheus could not be queried: {type(exc).__name__}")
    if response.status_code != 200 or body.get("status") != "success":
        return Measurement("error", f"Prometheus refused the query ({response.status_code}): "
                                    f"{str(body.get('error', ''))[:200]}")
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list) and len(result) == 2:
        raw = result[1]
    elif isinstance(result, list) and result and isinstance(result[0], dict) and "value" in result[0]:
        raw = result[0]["value"][1]
    else:
        return Measurement("error", f"the query returned no data: {query}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return Measurement("error", f"the query returned a non-number: {raw!r}")
    low, high = spec.get("min"), spec.get("max")
    if value != value:  # NaN: e.g. a rate over no traffic
        return Measurement("error", f"the query returned NaN: {query}")
    if low is not None and value < float(low):
        return Measurement("fail", f"{query} = {value:g}, below the minimum {float(low):g}")
    if high is not None and value > float(high):
        return Measurement("fail", f"{query} = {value:g}, above the maximum {float(high):g}")
    return Measurement("pass", f"{query} = {value:g}")
