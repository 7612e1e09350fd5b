"""Container execution activities: everything ``ContainerExecutionWorkflow`` does on a Docker engine.

Every activity runs at least once, so each is idempotent: the container's name is deterministic
(``devops-<owner>-c<instance id>``), a retried ``provision`` adopts the container a previous try started
(and removes one it only created), a retried ``wait_for_exit`` re-attaches to the running container
and re-reads its log from the start (the step log skips the lines already forwarded, counted in
the heartbeat details), status events carry a dedupe key, and removal treats NotFound as done.

All blocking Docker and database calls run in threads. Secret values are resolved here, passed to
Docker as environment, and masked (plain, base64, URL-encoded) in every log line we store; they
never reach the workflow. Containers carry the labels ``devops.instance``, ``devops.account``,
``devops.owner`` (this deployment: a hash of its database URL, so two deployments sharing an
engine never sweep each other's containers) and, inside a pipeline run, ``devops.run`` /
``devops.step`` / ``devops.attempt``.

Errors: a ``ContainerSpecError`` (bad spec, image not on the host, missing secret, Docker refusing
the configuration), ``QuotaNeverFits`` and ``ContainerInstanceMissing`` are non-retryable
``ApplicationError``s with a message for the user; ``DockerApiError`` is retried by the workflow's
policy.

The working directory: a tmpfs of ``storage_mb`` (mode 1777) when the spec has no artifact paths.
With artifact paths it is an anonymous Docker volume instead, because Docker cannot copy out of a
tmpfs (``get_archive`` does not see tmpfs mounts, running or stopped); the volume is removed with
the container, and its size is bounded only by the host's disk (the vfs driver has no quota).
``/tmp`` is always a tmpfs of ``storage_mb``; tmpfs pages also count against ``memory_mb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import posixpath
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import httpx
import requests.exceptions
from docker.types import Mount
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import StepInput, StepLogWriter, refuse_private_target
from adapters.artifact_store import ArtifactStore, UnsafeArchive
from adapters.secret_backends import SecretResolutionError, resolve_secrets
from db.crypto import SecretBox
from db.models import Artifact, ContainerEvent, ContainerInstance, DockerHost
from domain.masking import Masker
from settings import Settings

FINAL_STATUSES = ("completed", "failed", "cancelled", "timeout")
LOG_CAP_BYTES = 102_400
LOG_TRUNCATED_MARKER = "\n[log truncated at 100 KB]\n"
HEARTBEAT_SECONDS = 2.0
STATS_SECONDS = 2.0
LOG_SAVE_SECONDS = 1.0
DOCKER_TIMEOUT_SECONDS = 120
MIB = 1024 * 1024

CONTAINER_SPEC_ERROR = "ContainerSpecError"
QUOTA_NEVER_FITS = "QuotaNeverFits"
INSTANCE_MISSING = "ContainerInstanceMissing"
DOCKER_API_ERROR = "DockerApiError"
NON_RETRYABLE_TYPES = [CONTAINER_SPEC_ERROR, QUOTA_NEVER_FITS, INSTANCE_MISSING]

_PIDS_PATTERN = re.compile(r"can't fork|cannot fork|fork: retry|Resource temporarily unavailable", re.IGNORECASE)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def container_name(instance_id: int, settings: Settings) -> str:
    """Deterministic per instance and deployment: two deployments (databases) sharing an engine
    number their instances independently, so the owner mark keeps their names apart."""
    return f"devops-{owner_label(settings)[:8]}-c{instance_id}"


def owner_label(settings: Settings) -> str:
    """This deployment's mark on its containers (the database identifies a deployment)."""
    return hashlib.sha256(settings.resolved_database_url.encode()).hexdigest()[:16]


def spec_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=CONTAINER_SPEC_ERROR, non_retryable=True)


def _docker_error(action: str, exc: Exception) -> ApplicationError:
    """A retryable error, unless Docker says the request itself is wrong (4xx but 404/409)."""
    if isinstance(exc, docker.errors.APIError) and exc.status_code in (400, 403, 422):
        return spec_error(f"Docker refused to {action}: {exc.explanation or exc}")
    detail = exc.explanation if isinstance(exc, docker.errors.APIError) else str(exc)
    return ApplicationError(f"Docker error while trying to {action}: {type(exc).__name__}: {detail}",
                            type=DOCKER_API_ERROR)


# ---- the spec ---------------------------------------------------------------------------------


@dataclass
class ContainerSpec:
    """The instance's ``spec`` JSON read defensively, with the template defaults."""

    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    working_dir: str = "/work"
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    cpu_limit: float = 1.0
    memory_mb: int = 256
    pids_limit: int = 128
    storage_mb: int = 512
    network_mode: str = "none"
    timeout_seconds: int = 600
    artifact_paths: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = "65534:65534"
    read_only_rootfs: bool = True
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    bind_mounts: list[dict[str, Any]] = field(default_factory=list)
    callback_secret: str | None = None

    @classmethod
    def from_instance(cls, instance: ContainerInstance) -> ContainerSpec:
        raw = instance.spec if isinstance(instance.spec, dict) else {}

        def argv(key: str) -> list[str] | None:
            value = raw.get(key)
            if value is None or value == []:
                return None
            if isinstance(value, str):
                return ["/bin/sh", "-c", value] if key == "command" else [value]
            if not isinstance(value, list):
                raise spec_error(f"spec.{key} must be a list of strings")
            return [str(v) for v in value]

        def mapping(key: str) -> dict[str, str]:
            value = raw.get(key) or {}
            if not isinstance(value, dict):
                raise spec_error(f"spec.{key} must map names to values")
            return {str(k): "" if v is None else str(v) for k, v in value.items()}

        def number(key: str, default: float, kind: type = int) -> Any:
            value = raw.get(key, default)
            try:
                value = kind(default if value is None else value)
            except (TypeError, ValueError):
                raise spec_error(f"spec.{key} must be a number") from None
            if value <= 0:
                raise spec_error(f"spec.{key} must be positive")
            return value

        image = str(raw.get("image") or instance.image or "")
        if not image:
            raise spec_error("spec.image is missing: name the image to run")
        network = str(raw.get("network_mode") or "none")
        if network not in ("none", "bridge", "host"):
            raise spec_error(f"spec.network_mode {network!r} is not one of none, bridge, host")
        working_dir = str(raw.get("working_dir") or "/work")
        if not working_dir.startswith("/"):
            raise spec_error("spec.working_dir must be an absolute path")
        mounts = raw.get("bind_mounts") or []
        if not isinstance(mounts, list) or not all(isinstance(m, dict) and m.get("source") and m.get("target")
                                                   for m in mounts):
            raise spec_error("spec.bind_mounts must be a list of {source, target, read_only}")
        return cls(
            image=image,
            command=argv("command"),
            entrypoint=argv("entrypoint"),
            working_dir=working_dir,
            env=mapping("env"),
            secret_env=mapping("secret_env"),
            cpu_limit=number("cpu_limit", 1.0, float),
            memory_mb=number("memory_mb", 256),
            pids_limit=number("pids_limit", 128),
            storage_mb=number("storage_mb", 512),
            network_mode=network,
            timeout_seconds=number("timeout_seconds", instance.timeout_seconds or 600),
            artifact_paths=[str(p) for p in (raw.get("artifact_paths") or []) if str(p).strip()],
            labels=mapping("labels"),
            user=str(raw["user"]) if raw.get("user") else (None if "user" in raw else "65534:65534"),
            read_only_rootfs=bool(raw.get("read_only_rootfs", True)),
            privileged=bool(raw.get("privileged", False)),
            cap_add=[str(c) for c in (raw.get("cap_add") or [])],
            bind_mounts=mounts,
            callback_secret=str(raw["callback_secret"]) if raw.get("callback_secret") else None,
        )


def instance_labels(instance: ContainerInstance, spec: ContainerSpec, owner: str) -> dict[str, str]:
    labels = {k: v for k, v in spec.labels.items() if not k.startswith("devops.")}
    labels.update({"devops.instance": str(instance.id), "devops.account": str(instance.account_id),
                   "devops.owner": owner})
    if instance.run_id is not None:
        labels["devops.run"] = str(instance.run_id)
        if instance.step_id:
            labels["devops.step"] = instance.step_id
        if instance.attempt is not None:
            labels["devops.attempt"] = str(instance.attempt)
    return labels


def create_kwargs(spec: ContainerSpec, name: str, labels: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    """The ``containers.create`` arguments: the spec's limits on top of safe defaults."""
    tmpfs = {"/tmp": f"size={spec.storage_mb}m,mode=1777"}
    mounts = [Mount(target=str(m["target"]), source=str(m["source"]), type="bind",
                    read_only=bool(m.get("read_only", True))) for m in spec.bind_mounts]
    inside_a_bind = any(spec.working_dir == str(m["target"]).rstrip("/")
                        or spec.working_dir.startswith(str(m["target"]).rstrip("/") + "/") for m in spec.bind_mounts)
    if inside_a_bind:
        pass  # a pipeline step's workspace (or another bind mount) is the writable work dir
    elif spec.artifact_paths:
        # Kept after the container exits so the artifacts can be copied out (tmpfs is not).
        mounts.append(Mount(target=spec.working_dir, source=None, type="volume"))
    elif spec.working_dir != "/tmp":
        tmpfs[spec.working_dir] = f"size={spec.storage_mb}m,mode=1777"
    return {
        "image": spec.image,
        "command": spec.command,
        "entrypoint": spec.entrypoint,
        "name": name,
        "labels": labels,
        "environment": env,
        "working_dir": spec.working_dir,
        "user": spec.user or "",
        "mem_limit": spec.memory_mb * MIB,
        "memswap_limit": spec.memory_mb * MIB,  # the same as the memory limit: no swap
        "nano_cpus": int(spec.cpu_limit * 1e9),
        "pids_limit": spec.pids_limit,
        "cap_drop": ["ALL"],
        "cap_add": spec.cap_add or None,
        "security_opt": ["no-new-privileges"],
        "read_only": spec.read_only_rootfs,
        "privileged": spec.privileged,
        "network_mode": spec.network_mode,
        "tmpfs": tmpfs,
        "mounts": mounts,
        "detach": True,
        "stdin_open": False,
        "tty": False,
    }


# ---- inputs and results ----------------------------------------------------------------------


@dataclass
class ContainerInstanceInput:
    instance_id: int
    account_id: int


@dataclass
class ContainerPlan:
    status: str
    timeout_seconds: int
    heartbeat_timeout_seconds: float
    memory_mb: int
    artifact_count: int = 0


@dataclass
class ReserveResult:
    reserved: bool
    status: str
    reason: str | None = None


@dataclass
class ProvisionResult:
    container_id: str
    image_digest: str


@dataclass
class ContainerExit:
    exit_code: int | None
    oom_killed: bool = False
    violations: list[str] = field(default_factory=list)


@dataclass
class CollectArtifactsResult:
    stored: int = 0
    refused: int = 0
    missing: int = 0


@dataclass
class FinishContainerInput:
    instance_id: int
    account_id: int
    status: str
    error: str | None = None
    exit_code: int | None = None


@dataclass
class FinishContainerResult:
    callback_status: str | None = None


@dataclass
class SweepOrphansInput:
    host_id: int | None = None


@dataclass
class SweepOrphansResult:
    removed: list[str] = field(default_factory=list)


# ---- log and usage helpers -------------------------------------------------------------------


class CappedLog:
    """The instance's stored log: the first 100 KB (102400 bytes), then the marker."""

    def __init__(self, cap: int = LOG_CAP_BYTES) -> None:
        self._cap = cap
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False
        self.changed = False

    def add(self, text: str) -> None:
        if self.truncated:
            return
        data = text.encode()
        if self._size + len(data) > self._cap:
            room = self._cap - self._size
            self._parts.append(data[:room].decode(errors="ignore"))
            self._parts.append(LOG_TRUNCATED_MARKER)
            self._size = self._cap
            self.truncated = True
        else:
            self._parts.append(text)
            self._size += len(data)
        self.changed = True

    def text(self) -> str:
        return "".join(self._parts)


class UsageTracker:
    """Peaks and totals from ``container.stats`` samples (cgroup v1 and v2 shapes)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {"cpu_seconds": 0.0, "memory_peak_bytes": 0, "network_rx_bytes": 0,
                                         "network_tx_bytes": 0, "block_read_bytes": 0, "block_write_bytes": 0,
                                         "pids_peak": 0}
        self.samples = 0

    def _peak(self, key: str, value: float | None) -> None:
        if value:
            self.values[key] = max(self.values[key], value)

    def sample(self, stats: dict[str, Any]) -> None:
        if not stats:
            return
        self.samples += 1
        memory = stats.get("memory_stats") or {}
        self._peak("memory_peak_bytes", max(memory.get("max_usage") or 0, memory.get("usage") or 0))
        cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        self._peak("cpu_seconds", round(cpu / 1e9, 3) if cpu else None)
        networks = stats.get("networks") or {}
        self._peak("network_rx_bytes", sum(n.get("rx_bytes", 0) for n in networks.values()))
        self._peak("network_tx_bytes", sum(n.get("tx_bytes", 0) for n in networks.values()))
        blkio = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        self._peak("block_read_bytes", sum(e.get("value", 0) for e in blkio if str(e.get("op")).lower() == "read"))
        self._peak("block_write_bytes", sum(e.get("value", 0) for e in blkio if str(e.get("op")).lower() == "write"))
        self._peak("pids_peak", (stats.get("pids_stats") or {}).get("current"))

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {**self.values, "samples": self.samples, **extra}


def _parse_docker_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# ---- the activities --------------------------------------------------------------------------


class ContainerActivities:
    """Clients and settings are injected; ``docker_client`` defaults to the local engine
    (``DOCKER_HOST`` or the socket), and an instance with ``host_id`` uses that host's endpoint."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *,
                 docker_client: docker.DockerClient | None = None, http_client: httpx.AsyncClient | None = None,
                 artifact_store: ArtifactStore | None = None) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._default_client = docker_client
        self._host_clients: dict[int, docker.DockerClient] = {}
        self._clients_lock = threading.Lock()
        self._http = http_client
        self._store = artifact_store or ArtifactStore.from_settings(settings)
        self._owner = owner_label(settings)

    # ---- plumbing ------------------------------------------------------------------------

    def _client(self, host_id: int | None) -> docker.DockerClient:
        with self._clients_lock:
            if host_id is None:
                if self._default_client is None:
                    self._default_client = docker.from_env(timeout=DOCKER_TIMEOUT_SECONDS)
                return self._default_client
            if host_id not in self._host_clients:
                self._host_clients[host_id] = self._host_client(host_id)
            return self._host_clients[host_id]

    def _host_client(self, host_id: int) -> docker.DockerClient:
        with self._sessions() as session:
            host = session.get(DockerHost, host_id)
            if host is None:
                raise spec_error(f"Docker host {host_id} does not exist")
            endpoint, material = host.endpoint, (host.encrypted_tls_ca, host.encrypted_tls_cert,
                                                 host.encrypted_tls_key)
        tls: docker.tls.TLSConfig | bool = False
        if any(material):
            box = SecretBox(self._settings.secret_key, self._settings.old_secret_keys)
            folder = Path(tempfile.mkdtemp(prefix=f"devops-host-{host_id}-"))
            paths = []
            for name, token in zip(("ca.pem", "cert.pem", "key.pem"), material, strict=True):
                path = folder / name
                if token:
                    path.touch(mode=0o600)
                    path.write_text(box.decrypt(token))
                paths.append(str(path) if token else None)
            tls = docker.tls.TLSConfig(ca_cert=paths[0], verify=bool(paths[0]),
                                       client_cert=(paths[1], paths[2]) if paths[1] and paths[2] else None)
        return docker.DockerClient(base_url=endpoint, tls=tls, timeout=DOCKER_TIMEOUT_SECONDS)

    def _load(self, session: Session, inp: ContainerInstanceInput) -> ContainerInstance:
        instance = session.get(ContainerInstance, inp.instance_id)
        if instance is None or instance.account_id != inp.account_id:
            raise ApplicationError(f"container instance {inp.instance_id} does not exist", type=INSTANCE_MISSING,
                                   non_retryable=True)
        return instance

    def _set_status(self, session: Session, instance: ContainerInstance, status: str, **payload: Any) -> None:
        """Change the status and write its event once (a retried activity writes no second one)."""
        previous = instance.status
        instance.status = status
        key = f"status:{status}"
        seen = session.scalar(select(ContainerEvent.id).where(ContainerEvent.instance_id == instance.id,
                                                              ContainerEvent.dedupe_key == key))
        if seen is None:
            session.add(ContainerEvent(account_id=instance.account_id, instance_id=instance.id,
                                       event_type="status_changed", dedupe_key=key,
                                       payload={"status": status, "from": previous, "to": status, **payload}))

    def _event(self, session: Session, instance: ContainerInstance, event_type: str, payload: dict[str, Any],
               key: str | None = None) -> None:
        if key is not None and session.scalar(select(ContainerEvent.id).where(
                ContainerEvent.instance_id == instance.id, ContainerEvent.dedupe_key == key)) is not None:
            return
        session.add(ContainerEvent(account_id=instance.account_id, instance_id=instance.id, event_type=event_type,
                                   payload=payload, dedupe_key=key))

    def _secrets(self, session: Session, instance: ContainerInstance, spec: ContainerSpec) -> dict[str, str]:
        """Environment name -> value for the spec's secret_env."""
        if not spec.secret_env:
            return {}
        try:
            values = resolve_secrets(session, self._settings, instance.account_id, spec.secret_env.values())
        except SecretResolutionError as exc:
            raise spec_error(str(exc)) from None
        return {env: values[name] for env, name in spec.secret_env.items()}

    def _container(self, client: docker.DockerClient, instance_id: int) -> Any:
        try:
            return client.containers.get(container_name(instance_id, self._settings))
        except docker.errors.NotFound:
            return None

    # ---- prepare (a local activity: reads the row, no outside system) ---------------------

    @activity.defn(name="container_prepare")
    async def prepare(self, inp: ContainerInstanceInput) -> ContainerPlan:
        """What the workflow needs to plan the execution; fails non-retryably on a bad spec."""

        def work() -> ContainerPlan:
            with self._sessions() as session:
                instance = self._load(session, inp)
                spec = ContainerSpec.from_instance(instance)
                return ContainerPlan(status=instance.status, timeout_seconds=int(spec.timeout_seconds),
                                     heartbeat_timeout_seconds=self._settings.step_heartbeat_timeout_seconds,
                                     memory_mb=spec.memory_mb, artifact_count=len(spec.artifact_paths))

        return await asyncio.to_thread(work)

    # ---- reserve_or_wait -----------------------------------------------------------------

    @activity.defn(name="container_reserve_or_wait")
    async def reserve_or_wait(self, inp: ContainerInstanceInput) -> ReserveResult:
        """One try to reserve quota for a ``queued`` instance (the workflow sleeps between tries).
        An instance that could never fit fails with QuotaNeverFits."""
        from activities import container_quota

        def work() -> ReserveResult:
            with self._sessions.begin() as session:
                instance = self._load(session, inp)
                if instance.status != "queued":
                    return ReserveResult(reserved=instance.status in container_quota.HOLDING_STATUSES,
                                         status=instance.status)
                problems = container_quota.exceeds_limits(container_quota.quota_for(session, instance.account_id),
                                                          instance)
                if problems:
                    raise ApplicationError("; ".join(f"{name}: {why}" for name, why in problems),
                                           type=QUOTA_NEVER_FITS, non_retryable=True)
                reason = container_quota.try_reserve(session, instance)
                if reason is not None:
                    return ReserveResult(reserved=False, status="queued", reason=reason)
                instance.status = "queued"  # so that _set_status records the transition
                self._set_status(session, instance, "pending", reason="quota reserved")
                return ReserveResult(reserved=True, status="pending")

        return await asyncio.to_thread(work)

    # ---- provision -----------------------------------------------------------------------

    @activity.defn(name="container_provision")
    async def provision(self, inp: ContainerInstanceInput) -> ProvisionResult:
        """Resolve the image, create the container with the spec's limits, and start it.
        A container a previous try started is adopted; one it only created is replaced."""
        return await asyncio.to_thread(self._provision, inp)

    def _provision(self, inp: ContainerInstanceInput) -> ProvisionResult:
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            if instance.status in FINAL_STATUSES:
                raise spec_error(f"container instance {instance.id} has already ended ({instance.status})")
            spec = ContainerSpec.from_instance(instance)
            name = container_name(instance.id, self._settings)
            if instance.status not in ("provisioning", "running"):
                self._set_status(session, instance, "provisioning")
            instance.name = name
            labels = instance_labels(instance, spec, self._owner)
            host_id = instance.host_id
        with self._sessions() as session:
            instance = self._load(session, inp)
            secret_env = self._secrets(session, instance, spec)
        client = self._client(host_id)
        try:
            image = client.images.get(spec.image)
        except docker.errors.ImageNotFound:
            raise spec_error(f"image {spec.image!r} is not on the Docker host; pull or build it there first "
                             "(executions never pull)") from None
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise _docker_error(f"look up image {spec.image!r}", exc) from None
        digests = image.attrs.get("RepoDigests") or []
        digest = digests[0] if digests else image.id

        try:
            container = self._container(client, inp.instance_id)
            if container is not None and container.attrs.get("State", {}).get("StartedAt", "").startswith("0001-"):
                # Created by a try that died before starting it: start over with this try's settings.
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
                container = None
            if container is None:
                env = {**spec.env, **secret_env}
                container = client.containers.create(**create_kwargs(spec, name, labels, env))
                container.start()
                container.reload()
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise _docker_error(f"create and start container {name}", exc) from None

        started = _parse_docker_time(container.attrs.get("State", {}).get("StartedAt")) or _now()
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.container_id = container.id
            instance.image_digest = digest
            instance.started_at = instance.started_at or started
            if instance.status not in FINAL_STATUSES:
                self._set_status(session, instance, "running", container_id=container.id[:12], image_digest=digest)
        return ProvisionResult(container_id=container.id, image_digest=digest)

    # ---- wait_for_exit -------------------------------------------------------------------

    @activity.defn(name="container_wait_for_exit")
    async def wait_for_exit(self, inp: ContainerInstanceInput) -> ContainerExit:
        """Follow the container until it exits: its log (masked) into the instance (capped at
        100 KB) and into the step's log, stats samples into usage; then the exit code, usage and
        violations. A retry after a worker crash re-attaches to the same container."""
        with self._sessions() as session:
            instance = self._load(session, inp)
            spec = ContainerSpec.from_instance(instance)
            secret_env = self._secrets(session, instance, spec)
            host_id, run_id, step_id, attempt = instance.host_id, instance.run_id, instance.step_id, instance.attempt
        # building a masker of large secrets takes a while: off the event loop, which heartbeats
        masker = await asyncio.to_thread(Masker, list(secret_env.values()))
        client = self._client(host_id)
        container = await asyncio.to_thread(self._container, client, inp.instance_id)
        if container is None:
            raise spec_error(f"container {container_name(inp.instance_id, self._settings)} is gone: it was removed from the "
                             "Docker host while it ran")
        details = activity.info().heartbeat_details
        forwarded = int(details[0]) if details else 0
        step_log: StepLogWriter | None = None
        if run_id is not None and step_id and attempt is not None:
            step_inp = StepInput(run_id=run_id, account_id=inp.account_id, pipeline_id=0, step_id=step_id,
                                 step_name=step_id, attempt=attempt, params={})
            step_log = await asyncio.to_thread(StepLogWriter, self._sessions, step_inp, masker,
                                               self._settings.step_log_cap_bytes)
        follower = _LogFollower(container, masker, step_log, forwarded)
        usage = UsageTracker()
        stats_task = asyncio.create_task(self._sample_stats(container, usage))
        try:
            await follower.run(lambda: self._save_logs(inp, follower.log, usage))
        except asyncio.CancelledError:
            follower.close()
            stats_task.cancel()
            await asyncio.shield(asyncio.to_thread(self._save_logs, inp, follower.log, usage, True))
            raise
        finally:
            follower.close()
            stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stats_task
        return await asyncio.to_thread(self._record_exit, inp, container, spec, follower, usage)

    async def _sample_stats(self, container: Any, usage: UsageTracker) -> None:
        while True:
            try:
                stats = await asyncio.to_thread(container.stats, stream=False, one_shot=True)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                stats = {}
            usage.sample(stats)
            await asyncio.sleep(STATS_SECONDS)

    def _save_logs(self, inp: ContainerInstanceInput, log: CappedLog, usage: UsageTracker,
                   force: bool = False) -> None:
        if not (log.changed or force):
            return
        log.changed = False
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.logs = log.text()
            instance.logs_truncated = log.truncated
            if usage.samples:
                instance.usage = usage.as_dict()

    def _record_exit(self, inp: ContainerInstanceInput, container: Any, spec: ContainerSpec,
                     follower: _LogFollower, usage: UsageTracker) -> ContainerExit:
        container.reload()
        state = container.attrs.get("State", {})
        started, finished = _parse_docker_time(state.get("StartedAt")), _parse_docker_time(state.get("FinishedAt"))
        duration = round((finished - started).total_seconds(), 3) if started and finished else None
        oom = bool(state.get("OOMKilled"))
        exit_code = state.get("ExitCode")
        if exit_code == 137 and not oom:
            oom = _oom_reported_late(container, started)
        violations: list[dict[str, Any]] = []
        if oom:
            violations.append({"type": "oom_killed",
                               "message": f"killed: out of memory (limit {spec.memory_mb} MB)"})
        if follower.fork_failures or usage.values["pids_peak"] >= spec.pids_limit:
            violations.append({"type": "pids_limit",
                               "message": f"the process limit of {spec.pids_limit} was reached"})
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.logs = follower.log.text()
            instance.logs_truncated = follower.log.truncated
            instance.exit_code = exit_code
            instance.usage = usage.as_dict(duration_seconds=duration)
            instance.violations = violations
            for violation in violations:
                self._event(session, instance, "violation", violation, key=f"violation:{violation['type']}")
        return ContainerExit(exit_code=exit_code, oom_killed=oom, violations=[v["type"] for v in violations])

    # ---- artifacts -----------------------------------------------------------------------

    @activity.defn(name="container_collect_artifacts")
    async def collect_artifacts(self, inp: ContainerInstanceInput) -> CollectArtifactsResult:
        """Copy each artifact path out of the (stopped) container as a tar, check it and store
        it; a refused or missing path is recorded on the instance and is not a failure."""
        work = asyncio.ensure_future(asyncio.to_thread(self._collect_artifacts, inp))
        while not (await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS))[0]:
            activity.heartbeat()
        return work.result()

    def _collect_artifacts(self, inp: ContainerInstanceInput) -> CollectArtifactsResult:
        with self._sessions() as session:
            instance = self._load(session, inp)
            spec = ContainerSpec.from_instance(instance)
            host_id, run_id, step_id = instance.host_id, instance.run_id, instance.step_id
        result = CollectArtifactsResult()
        if not spec.artifact_paths:
            return result
        client = self._client(host_id)
        container = self._container(client, inp.instance_id)
        listed: list[dict[str, Any]] = []
        for index, path in enumerate(spec.artifact_paths):
            full = path if path.startswith("/") else posixpath.join(spec.working_dir, path)
            base = _SAFE_NAME.sub("_", posixpath.basename(posixpath.normpath(full))).strip("._") or "root"
            key = f"accounts/{inp.account_id}/containers/{inp.instance_id}/{index}-{base}.tar"
            entry: dict[str, Any] = {"name": path, "path": full}
            if container is None:
                entry["error"] = "the container was gone before its artifacts were copied"
                result.missing += 1
                listed.append(entry)
                continue
            try:
                bits, _stat = container.get_archive(full)
                stored = self._store.store_tar(bits, key)
            except docker.errors.NotFound:
                entry["error"] = "not found in the container"
                result.missing += 1
                listed.append(entry)
                continue
            except UnsafeArchive as exc:
                entry["error"] = f"refused: {exc}"
                result.refused += 1
                listed.append(entry)
                continue
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise _docker_error(f"copy {full} out of the container", exc) from None
            with self._sessions.begin() as session:
                row = session.scalar(select(Artifact).where(Artifact.instance_id == inp.instance_id,
                                                            Artifact.store_key == key))
                if row is None:
                    row = Artifact(account_id=inp.account_id, instance_id=inp.instance_id, run_id=run_id,
                                   step_id=step_id, name=path, store_key=key)
                    session.add(row)
                row.size_bytes, row.sha256, row.entries = stored.size, stored.sha256, stored.entries
                session.flush()
                entry.update({"id": row.id, "store_key": key, "size_bytes": stored.size, "sha256": stored.sha256,
                              "entries": stored.entries})
            result.stored += 1
            listed.append(entry)
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.artifacts = listed
            for entry in listed:
                kind = "artifact_stored" if "store_key" in entry else "artifact_not_stored"
                self._event(session, instance, kind, entry, key=f"artifact:{entry['path']}"[:100])
        return result

    # ---- kill / remove -------------------------------------------------------------------

    @activity.defn(name="container_kill")
    async def kill(self, inp: ContainerInstanceInput) -> None:
        """Stop the container now (SIGKILL), keeping it so its log and exit can still be read."""

        def work() -> None:
            client = self._client(self._host_of(inp))
            container = self._container(client, inp.instance_id)
            if container is None:
                return
            try:
                container.kill()
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # not running any more
                    return
                raise _docker_error(f"kill {container_name(inp.instance_id, self._settings)}", exc) from None

        await asyncio.to_thread(work)

    @activity.defn(name="container_remove")
    async def remove(self, inp: ContainerInstanceInput) -> None:
        """Force-remove the container and its anonymous volumes; already gone is fine."""

        def work() -> None:
            client = self._client(self._host_of(inp))
            try:
                client.api.remove_container(container_name(inp.instance_id, self._settings), force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation or ""):
                    return
                raise _docker_error(f"remove {container_name(inp.instance_id, self._settings)}", exc) from None

        await asyncio.to_thread(work)

    def _host_of(self, inp: ContainerInstanceInput) -> int | None:
        with self._sessions() as session:
            instance = session.get(ContainerInstance, inp.instance_id)
            return instance.host_id if instance is not None else None

    # ---- finish + callback ---------------------------------------------------------------

    @activity.defn(name="container_finish")
    async def finish(self, inp: FinishContainerInput) -> FinishContainerResult:
        """Record the final status (and its event), then POST the result to the instance's
        ``callback_url``, signed with ``X-Devops-Signature-256: sha256=HMAC-SHA256(key, body)``.
        The key is the value of the account secret named by ``spec.callback_secret`` when set,
        else ``callback_signing_key(settings, account_id)``."""
        body, url, key = await asyncio.to_thread(self._finish_row, inp)
        if not url:
            return FinishContainerResult()
        status = await self._send_callback(inp, url, key, body)
        await asyncio.to_thread(self._record_callback, inp, status)
        return FinishContainerResult(callback_status=status)

    def _finish_row(self, inp: FinishContainerInput) -> tuple[bytes, str | None, bytes]:
        with self._sessions.begin() as session:
            instance = self._load(session, inp)  # type: ignore[arg-type]
            if instance.status not in FINAL_STATUSES:
                instance.error = inp.error
                if inp.exit_code is not None:
                    instance.exit_code = inp.exit_code
                instance.finished_at = _now()
                self._set_status(session, instance, inp.status, error=inp.error, exit_code=instance.exit_code)
            if not instance.callback_url or (instance.callback_status or "").startswith("delivered"):
                return b"", None, b""
            spec = ContainerSpec.from_instance(instance)
            key = callback_signing_key(self._settings, instance.account_id)
            if spec.callback_secret:
                try:
                    key = resolve_secrets(session, self._settings, instance.account_id,
                                          [spec.callback_secret])[spec.callback_secret].encode()
                except SecretResolutionError as exc:
                    instance.callback_status = f"not sent: {exc}"[:100]
                    return b"", None, b""
            payload = {
                "event": "container.finished", "instance_id": instance.id, "account_id": instance.account_id,
                "status": instance.status, "exit_code": instance.exit_code, "error": instance.error,
                "image": instance.image, "image_digest": instance.image_digest,
                "run_id": instance.run_id, "step_id": instance.step_id,
                "started_at": instance.started_at.isoformat() if instance.started_at else None,
                "finished_at": instance.finished_at.isoformat() if instance.finished_at else None,
                "usage": instance.usage, "violations": instance.violations,
                "artifacts": [{k: a.get(k) for k in ("name", "size_bytes", "sha256", "error") if k in a}
                              for a in instance.artifacts or []],
            }
            body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
            return body, instance.callback_url, key

    async def _send_callback(self, inp: FinishContainerInput, url: str, key: bytes, body: bytes) -> str:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            return "refused: not an http(s) URL"
        if not self._settings.private_targets_allowed:
            try:
                await refuse_private_target(url)
            except ApplicationError as exc:
                return f"refused: {exc.message}"[:100]
        headers = {"Content-Type": "application/json", "User-Agent": "devops-orchestrator",
                   "X-Devops-Event": "container.finished", "X-Devops-Delivery": f"container-{inp.instance_id}",
                   "X-Devops-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()}
        client = self._http or httpx.AsyncClient()
        last_try = activity.info().attempt >= 3
        try:
            response = await client.post(url, content=body, headers=headers, timeout=30, follow_redirects=False)
        except httpx.HTTPError as exc:
            if last_try:
                return f"failed: {type(exc).__name__}"
            raise ApplicationError(f"callback target unreachable: {type(exc).__name__}",
                                   type="CallbackUnreachable") from None
        finally:
            if self._http is None:
                await client.aclose()
        if response.status_code >= 500 and not last_try:
            raise ApplicationError(f"callback target answered {response.status_code}", type="CallbackServerError")
        if response.status_code >= 300:
            return f"failed: HTTP {response.status_code}"
        return f"delivered: HTTP {response.status_code}"

    def _record_callback(self, inp: FinishContainerInput, status: str) -> None:
        with self._sessions.begin() as session:
            instance = self._load(session, inp)  # type: ignore[arg-type]
            instance.callback_status = status[:100]
            self._event(session, instance, "callback", {"status": status})

    # ---- orphans ---------------------------------------------------------------------------

    @activity.defn(name="container_sweep_orphans")
    async def sweep_orphans(self, inp: SweepOrphansInput) -> SweepOrphansResult:
        """Remove this deployment's labelled containers whose instance has ended or is gone."""
        return SweepOrphansResult(removed=await asyncio.to_thread(self.sweep_orphans_now, inp.host_id))

    def sweep_orphans_now(self, host_id: int | None = None) -> list[str]:
        client = self._client(host_id)
        containers = client.containers.list(all=True, filters={"label": [f"devops.owner={self._owner}",
                                                                          "devops.instance"]})
        ids: dict[int, Any] = {}
        for container in containers:
            with contextlib.suppress(ValueError, TypeError):
                ids[int(container.labels.get("devops.instance"))] = container
        if not ids:
            return []
        with self._sessions() as session:
            live = dict(session.execute(select(ContainerInstance.id, ContainerInstance.status)
                                        .where(ContainerInstance.id.in_(list(ids)))).all())
        removed = []
        for instance_id, container in ids.items():
            if live.get(instance_id) not in FINAL_STATUSES and instance_id in live:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            removed.append(container.name)
        return removed


def callback_signing_key(settings: Settings, account_id: int) -> bytes:
    """The default key of an account's container callbacks, derived from the settings' secret key
    (so nothing extra is stored): HMAC-SHA256(secret_key, "container-callback:<account id>")."""
    return hmac.new(settings.secret_key.encode(), f"container-callback:{account_id}".encode(),
                    hashlib.sha256).hexdigest().encode()


class _LogFollower:
    """Follows a container's log from its start in a thread, line by line: masked lines into the
    capped instance log and (past ``skip`` lines, already forwarded by an earlier try) into the
    step log. A stream that ends while the container still runs (an idle read timeout) is
    reopened and the lines already seen are skipped."""

    def __init__(self, container: Any, masker: Masker, step_log: StepLogWriter | None, skip: int) -> None:
        self._container = container
        self._masker = masker
        self._step_log = step_log
        self._skip = skip
        self.log = CappedLog()
        self.lines = 0  # lines of the container's log handled so far
        self.forwarded = skip  # lines written to the step log (heartbeat details, for a retry)
        self.fork_failures = 0
        self._stream: Any = None
        self._closed = False

    def close(self) -> None:
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            self._stream = self._container.logs(stream=True, follow=True, stdout=True, stderr=True)
            for chunk in self._stream:
                put(chunk)
        except Exception as exc:  # noqa: BLE001 - handed to the async side, which decides
            put(exc)
        finally:
            put(None)

    def _line(self, raw: bytes) -> None:
        self.lines += 1
        text = self._masker.mask(raw.decode(errors="replace"))
        if _PIDS_PATTERN.search(text):
            self.fork_failures += 1
        self.log.add(text + "\n")
        if self._step_log is not None and self.lines > self._skip:
            self._step_log.line(text)

    async def run(self, save: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        last_beat = last_save = 0.0
        failures = 0
        while not self._closed:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            index = 0  # lines of this stream; a reopened stream starts again at the first line
            partial = b""
            error: BaseException | None = None
            pump = asyncio.create_task(asyncio.to_thread(self._pump, loop, queue))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_SECONDS / 2)
                except TimeoutError:
                    item = b""
                if item is None:
                    break
                if isinstance(item, BaseException):
                    error = item
                    continue
                partial += item
                *complete, partial = partial.split(b"\n")
                for raw in complete:
                    index += 1
                    if index > self.lines:
                        self._line(raw.rstrip(b"\r"))
                now = time.monotonic()
                if now - last_save >= LOG_SAVE_SECONDS:
                    await self._flush_step_log()
                    await asyncio.to_thread(save)
                    last_save = now
                if now - last_beat >= HEARTBEAT_SECONDS:
                    activity.heartbeat(self.forwarded)
                    last_beat = now
            await pump
            if self._closed:
                break
            if error is not None:
                # A read timeout on a quiet container or a daemon hiccup: read again from the
                # start (an exited container's log ends the stream at once), skipping seen lines.
                failures += 1
                if failures >= 5:
                    raise _docker_error("follow the container's log", error)  # type: ignore[arg-type]
                continue
            await asyncio.to_thread(self._container.reload)
            if self._container.attrs.get("State", {}).get("Running"):
                continue
            if partial:
                self._line(partial.rstrip(b"\r"))
            break
        await self._flush_step_log()
        activity.heartbeat(self.forwarded)

    async def _flush_step_log(self) -> None:
        if self._step_log is None:
            return
        lines = self.lines
        await self._step_log.aflush()
        self.forwarded = max(self.forwarded, lines)


def _oom_reported_late(container: Any, started: datetime | None) -> bool:
    """A SIGKILLed container (exit 137) whose engine has not flagged OOMKilled yet: the engine
    handles the task's exit and containerd's OOM event separately, and on a loaded machine the
    exit can come first. Look again for a moment, and at the engine's ``oom`` event."""
    for _ in range(4):
        time.sleep(0.5)
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        if container.attrs.get("State", {}).get("OOMKilled"):
            return True
    since = int(started.timestamp()) - 1 if started else int(time.time()) - 3600
    try:
        events = container.client.events(since=since, until=int(time.time()) + 1, decode=True,
                                         filters={"container": container.id, "event": "oom"})
        return any(True for _ in events)
    except docker.errors.APIError:
        return False
