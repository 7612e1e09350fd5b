"""Docker hosts (the seed's ``DockerHost``): connecting to an engine, and one sync round.

:func:`docker_client` opens a ``docker.DockerClient`` for a host: ``unix://`` sockets as they are,
``tcp://`` with TLS from the host's decrypted CA, certificate and key, written to a private
temporary directory (mode 0700) that lives as long as the client. Timeouts are short: a host that
does not answer must fail a round quickly, not hold a worker thread.

:meth:`DockerHostActivities.sync_host` is one round of ``HostSyncWorkflow``: engine metrics,
every container (stopped ones too), every image and the events since the host's cursor. Rows are
keyed by the engine's ids and carry a fingerprint (sha256 of the stored fields), so a round only
writes what changed, deletes what the engine no longer has, and a round in which nothing changed
writes no row at all, not even the host's (its ``last_synced_at`` is the last round that wrote
something; the workflow's ``state`` query tells when the last round ran). Everything is done with
one listing per kind and bulk statements, so a round is linear in the number of containers.

A host that cannot be reached is an answer, not an activity failure: the round records it
(``consecutive_failures`` + 1, ``last_error``; status ``disconnected``, then ``error`` from the
5th consecutive failure, the seed's rule) and returns ``ok=False``, so the workflow never retries
or fails because of a host. Database failures do raise and are retried by Temporal.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import hashlib
import ipaddress
import json
import os
import posixpath
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from db.crypto import SecretBox
from db.models import DockerContainer, DockerEvent, DockerHost, DockerImage, SwarmCluster
from settings import Settings

#: Consecutive failed rounds after which a host's status is ``error`` (the seed's rule).
ERROR_AFTER_FAILURES = 5
#: Seconds one engine call may take before the round (or request) gives up on the host.
ENGINE_TIMEOUT_SECONDS = 15
#: How far back the first round of a host reads events (the engine keeps only recent ones anyway).
FIRST_EVENTS_WINDOW_SECONDS = 3600
_NANO = 1_000_000_000

# "Up 3 minutes (healthy)" -> "Up (healthy)", "Exited (0) 2 hours ago" -> "Exited (0)": the engine's
# status text carries the time since the change, which would make every round rewrite every row.
_RELATIVE_TIME = re.compile(r"\s+(?:Less than a second|About an? \w+|\d+ \w+)(?: ago)?")


# ---- connecting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostTarget:
    """Where and how to reach an engine; TLS material decrypted (never logged or returned).
    ``scope_account`` is set when the engine is shared (see :func:`engine_shared`): then only
    objects labelled ``devops.account=<scope_account>`` may be seen or touched through it."""

    endpoint: str
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    scope_account: int | None = None

    @property
    def uses_tls(self) -> bool:
        return self.endpoint.startswith("tcp://") and bool(self.tls_ca or self.tls_cert)


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key, settings.old_secret_keys)


def host_target(host: DockerHost, box: SecretBox, scope_account: int | None = None) -> HostTarget:
    def plain(token: bytes | None) -> str | None:
        return box.decrypt(token) if token else None

    return HostTarget(endpoint=host.endpoint, tls_ca=plain(host.encrypted_tls_ca),
                      tls_cert=plain(host.encrypted_tls_cert), tls_key=plain(host.encrypted_tls_key),
                      scope_account=scope_account)


# ---- which engines accounts may register, and which are shared -----------------------------------------
#
# An endpoint is *local* when it reaches this machine: unix:// or npipe:// sockets, localhost,
# loopback or unspecified addresses, an address of one of this machine's interfaces, a name that
# resolves to one of those, or the worker's own DOCKER_HOST. Local engines hold the worker's own
# containers (and often every tenant's), so accounts may register them only when the operator lists
# them in DEVOPS_ENGINE_ALLOWLIST (or in development). A non-empty allowlist is strict: endpoints
# matching none of its patterns are refused, local or not.
#
# An engine is *shared* when it is local or allowlisted (an operator's engine), or when more than
# one account registered the same normalised endpoint. Through a shared engine an account sees and
# touches only objects labelled ``devops.account=<its id>``; anything else answers 404.

ACCOUNT_LABEL = "devops.account"
ALLOWLIST_HINT = "the operator must list it in DEVOPS_ENGINE_ALLOWLIST"


def normalize_endpoint(endpoint: str) -> str:
    """One spelling per engine: lower-case scheme and host, ``tcp://host:port`` (port 2375 when
    absent), socket paths normalised (``//`` and ``.`` parts removed)."""
    text = (endpoint or "").strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("unix", "npipe"):
        path = parts.path or ""
        if scheme == "unix":
            path = posixpath.normpath("/" + path.lstrip("/")) if path else "/"
        else:
            path = (parts.netloc + path).replace("\\", "/").lower()
        return f"{scheme}://{path}"
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or (443 if scheme == "https" else 2375)
    except ValueError:
        return text.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def _own_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether the address belongs to this machine (binding to it works only then)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError as exc:
        return exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL)


def _local_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified or _own_address(address)


def is_local_endpoint(endpoint: str, worker_docker_host: str | None = None, resolve: bool = True) -> bool:
    """Whether ``endpoint`` reaches this machine's own engine (see the rules above)."""
    normal = normalize_endpoint(endpoint)
    parts = urlsplit(normal)
    if parts.scheme in ("unix", "npipe"):
        return True
    worker = worker_docker_host if worker_docker_host is not None else os.environ.get("DOCKER_HOST", "")
    if worker and normalize_endpoint(worker) == normal:
        return True
    host = parts.hostname or ""
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    if _local_address(host):
        return True
    if not resolve:
        return False
    try:
        infos = socket.getaddrinfo(host, parts.port or 2375, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return False
    return any(_local_address(str(info[4][0])) for info in infos)


def allowlisted(endpoint: str, patterns: Iterable[str]) -> bool:
    """Whether an operator pattern (fnmatch) matches the endpoint, as written or normalised."""
    normal = normalize_endpoint(endpoint)
    for raw in patterns:
        pattern = raw.strip()
        if not pattern:
            continue
        if normal == normalize_endpoint(pattern):  # literal, also for IPv6 brackets fnmatch would read as a class
            return True
        if fnmatch.fnmatchcase(normal, pattern) or fnmatch.fnmatchcase(endpoint, pattern):
            return True
    return False


def endpoint_refusal(endpoint: str, allowlist: Iterable[str], environment: str, local: bool) -> str | None:
    """Why an account may not register ``endpoint`` (None: it may). Pure: ``local`` comes from
    :func:`is_local_endpoint`."""
    patterns = [p for p in allowlist if p.strip()]
    if allowlisted(endpoint, patterns):
        return None
    if local:
        if environment == "development":
            return None
        return (f"{normalize_endpoint(endpoint)} is an engine on the service's own machine (a local socket or "
                f"loopback address): accounts may not register it; {ALLOWLIST_HINT}")
    if patterns:
        return f"{normalize_endpoint(endpoint)} matches no pattern of the engine allowlist; {ALLOWLIST_HINT}"
    return None


def engine_shared(session: Session, settings: Settings, account_id: int, endpoint: str) -> bool:
    """Whether the engine behind ``endpoint`` is shared (an operator's local or allowlisted engine,
    or registered by another account too): then everything through it is scoped by label."""
    if allowlisted(endpoint, settings.engine_allowlist) or is_local_endpoint(endpoint):
        return True
    normal = normalize_endpoint(endpoint)
    host = (urlsplit(normal).hostname or "").strip("[]")
    others: set[str] = set()
    for model in (DockerHost, SwarmCluster):
        query = select(model.endpoint).where(model.account_id != account_id)
        if host:
            query = query.where(model.endpoint.ilike(f"%{host}%"))
        others.update(session.scalars(query.distinct()))
    return any(normalize_endpoint(other) == normal for other in others)


def scope_of(target: HostTarget) -> dict[str, list[str]]:
    """The engine list filter that keeps a shared engine's objects to the account's own."""
    return {"label": [f"{ACCOUNT_LABEL}={target.scope_account}"]} if target.scope_account is not None else {}


def owns(target: HostTarget, labels: dict[str, Any] | None) -> bool:
    """Whether an object with these labels may be seen through ``target``."""
    return target.scope_account is None or (labels or {}).get(ACCOUNT_LABEL) == str(target.scope_account)


@contextmanager
def docker_client(target: HostTarget, timeout: float = ENGINE_TIMEOUT_SECONDS) -> Iterator[docker.DockerClient]:
    """A connected client for the host (the API version is negotiated, so this already talks to it)."""
    with tempfile.TemporaryDirectory(prefix="docker-tls-") as private_dir:
        tls: docker.tls.TLSConfig | bool = False
        if target.uses_tls:
            paths: dict[str, str] = {}
            for name, content in (("ca.pem", target.tls_ca), ("cert.pem", target.tls_cert),
                                  ("key.pem", target.tls_key)):
                if content:
                    path = os.path.join(private_dir, name)
                    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(descriptor, "w") as handle:
                        handle.write(content)
                    paths[name] = path
            client_cert = (paths["cert.pem"], paths["key.pem"]) if "cert.pem" in paths and "key.pem" in paths else None
            tls = docker.tls.TLSConfig(client_cert=client_cert, ca_cert=paths.get("ca.pem"),
                                       verify=paths.get("ca.pem") or True)
        client = docker.DockerClient(base_url=target.endpoint, tls=tls, timeout=int(timeout), version="auto")
        try:
            yield client
        finally:
            client.close()


# ---- what went wrong -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineProblem:
    """A Docker failure classified for callers: ``kind`` is not_found | conflict | bad_request |
    unreachable | engine_error; ``message`` is safe to show (the engine's explanation, no secrets)."""

    kind: str
    message: str


def classify(exc: BaseException, endpoint: str = "") -> EngineProblem | None:
    """What a docker SDK / transport exception means, or None when it is not one of those."""
    where = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, APIError):
        explanation = _short(str(exc.explanation or exc))
        code = exc.status_code
        if isinstance(exc, (NotFound, ImageNotFound)) or code == 404:
            return EngineProblem("not_found", explanation)
        if code == 409:
            return EngineProblem("conflict", explanation)
        if code is not None and 400 <= code < 500:
            return EngineProblem("bad_request", explanation)
        return EngineProblem("engine_error", f"the Docker engine{where} answered an error: {explanation}")
    if isinstance(exc, (requests.RequestException, DockerException, OSError)):
        return EngineProblem("unreachable", f"the Docker engine{where} cannot be reached "
                                            f"({type(exc).__name__}: {_short(str(exc))})")
    return None


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# ---- one sync round ----------------------------------------------------------------------------------


@dataclass
class SyncHostInput:
    host_id: int
    account_id: int


@dataclass
class SyncCounts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


@dataclass
class SyncHostResult:
    ok: bool
    host_status: str = ""
    containers: SyncCounts = field(default_factory=SyncCounts)
    images: SyncCounts = field(default_factory=SyncCounts)
    events: int = 0
    rows_written: int = 0
    consecutive_failures: int = 0
    error: str | None = None
    host_gone: bool = False  # the host row is deleted: the workflow ends
    finished_at: str = ""  # ISO 8601


@dataclass
class _Observed:
    metrics: dict[str, Any]
    containers: dict[str, dict[str, Any]]
    images: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]


def fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def normalize_status(text: str) -> str:
    return _RELATIVE_TIME.sub("", text or "").strip()


def _timestamp(seconds: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(seconds), UTC) if seconds else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def container_values(listed: dict[str, Any]) -> dict[str, Any]:
    """The stored fields of one entry of ``GET /containers/json`` (the fingerprint covers all of them)."""
    names = listed.get("Names") or [""]
    ports = sorted((p for p in listed.get("Ports") or []),
                   key=lambda p: (p.get("PrivatePort") or 0, p.get("Type") or "", p.get("IP") or "",
                                  p.get("PublicPort") or 0))
    return {
        "name": (names[0] or "").lstrip("/")[:300],
        "image": (listed.get("Image") or "")[:500],
        "image_id": (listed.get("ImageID") or "")[:100],
        "state": (listed.get("State") or "")[:30],
        "status": normalize_status(listed.get("Status") or "")[:200],
        "labels": dict(listed.get("Labels") or {}),
        "ports": ports,
        "created": _timestamp(listed.get("Created")),
    }


def image_values(listed: dict[str, Any]) -> dict[str, Any]:
    tags = [t for t in listed.get("RepoTags") or [] if t != "<none>:<none>"]
    digests = [d for d in listed.get("RepoDigests") or [] if d != "<none>@<none>"]
    return {"repo_tags": sorted(tags), "repo_digests": sorted(digests), "size_bytes": int(listed.get("Size") or 0),
            "created": _timestamp(listed.get("Created"))}


def engine_metrics(info: dict[str, Any], version: dict[str, Any], images: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """System metrics kept on the host: only values that change when the engine does (no clock,
    no uptime), so an idle engine gives the same metrics every round. ``disk_images_bytes`` sums
    the image list; ``df()`` is not called because it walks every layer (slow with vfs)."""
    return {
        "docker_version": version.get("Version") or info.get("ServerVersion"),
        "api_version": version.get("ApiVersion"),
        "os": info.get("OperatingSystem"),
        "os_type": info.get("OSType"),
        "architecture": info.get("Architecture"),
        "kernel_version": info.get("KernelVersion"),
        "memory_bytes": info.get("MemTotal"),
        "cpus": info.get("NCPU"),
        "storage_driver": info.get("Driver"),
        "docker_root_dir": info.get("DockerRootDir"),
        "containers": info.get("Containers"),
        "containers_running": info.get("ContainersRunning"),
        "containers_paused": info.get("ContainersPaused"),
        "containers_stopped": info.get("ContainersStopped"),
        "images": len(images),
        "disk_images_bytes": sum(v["size_bytes"] for v in images.values()),
        "swarm": ((info.get("Swarm") or {}).get("LocalNodeState")),
    }


def _event_row(raw: dict[str, Any]) -> dict[str, Any] | None:
    time_nano = raw.get("timeNano") or (int(raw["time"]) * _NANO if raw.get("time") else None)
    if not time_nano:
        return None
    actor = raw.get("Actor") or {}
    return {"time_nano": int(time_nano), "event_type": str(raw.get("Type") or "")[:50],
            "action": str(raw.get("Action") or raw.get("status") or "")[:100],
            "actor_id": str(actor.get("ID") or raw.get("id") or "")[:200],
            "attributes": dict(actor.get("Attributes") or {})}


def observe(client: docker.DockerClient, events_cursor: int | None, scope: int | None = None) -> _Observed:
    """Everything one round reads from the engine: one call per kind. With ``scope`` (a shared
    engine) only the account's labelled containers, images and events, and no engine-wide counts."""
    api = client.api
    info = api.info()
    version = api.version()
    filters = {"label": [f"{ACCOUNT_LABEL}={scope}"]} if scope is not None else None
    containers = {c["Id"]: container_values(c) for c in api.containers(all=True, filters=filters)}
    images = {i["Id"]: image_values(i) for i in api.images(filters=filters)}
    now = time.time()
    since = (f"{events_cursor // _NANO}.{events_cursor % _NANO:09d}" if events_cursor
             else f"{int(now) - FIRST_EVENTS_WINDOW_SECONDS}")
    stream = api.events(since=since, until=f"{now:.9f}", decode=True)
    try:
        events = [row for row in (_event_row(raw) for raw in stream) if row is not None]
    finally:
        stream.close()
    metrics = engine_metrics(info, version, images)
    if scope is not None:
        # other accounts' objects are not counted, nor are their events kept (container and image
        # events carry the object's labels in their attributes)
        events = [e for e in events if e["attributes"].get(ACCOUNT_LABEL) == str(scope)]
        states = [c["state"] for c in containers.values()]
        metrics.update(containers=len(states), containers_running=states.count("running"),
                       containers_paused=states.count("paused"),
                       containers_stopped=sum(1 for state in states if state not in ("running", "paused")))
    return _Observed(metrics=metrics, containers=containers, images=images, events=events)


class DockerHostActivities:
    """Settings and the session factory are injected; Docker clients are opened per round from the
    host row (TLS material decrypted in the activity, never in workflow history)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = session_factory

    @activity.defn(name="sync_docker_host")
    async def sync_host(self, inp: SyncHostInput) -> SyncHostResult:
        """One sync round of the host (see the module docstring); an unreachable host is ``ok=False``."""
        return await asyncio.to_thread(self.sync_round, inp)

    def sync_round(self, inp: SyncHostInput) -> SyncHostResult:
        with self._sessions() as session:
            host = session.scalar(select(DockerHost).where(DockerHost.id == inp.host_id,
                                                           DockerHost.account_id == inp.account_id))
            if host is None:
                return SyncHostResult(ok=False, host_gone=True, error="host deleted", finished_at=_now_iso())
            shared = engine_shared(session, self._settings, inp.account_id, host.endpoint)
            target = host_target(host, secret_box(self._settings), inp.account_id if shared else None)
            cursor = host.events_cursor
            session.rollback()  # no transaction stays open while the engine answers
        try:
            with docker_client(target) as client:
                observed = observe(client, cursor, target.scope_account)
        except Exception as exc:  # noqa: BLE001 - classified; anything else is re-raised below
            problem = classify(exc, target.endpoint)
            if problem is None:
                raise
            return self._record_failure(inp, problem.message)
        return self._apply(inp, observed)

    def _record_failure(self, inp: SyncHostInput, message: str) -> SyncHostResult:
        with self._sessions() as session:
            host = session.scalar(select(DockerHost).where(DockerHost.id == inp.host_id,
                                                           DockerHost.account_id == inp.account_id))
            if host is None:
                return SyncHostResult(ok=False, host_gone=True, error="host deleted", finished_at=_now_iso())
            failures = (host.consecutive_failures or 0) + 1
            status = "error" if failures >= ERROR_AFTER_FAILURES else "disconnected"
            if host.status == "maintenance":
                status = "maintenance"
            session.execute(update(DockerHost).where(DockerHost.id == host.id).values(
                consecutive_failures=failures, last_error=message, status=status, updated_at=DockerHost.updated_at))
            session.commit()
        activity.logger.info("docker host %s: round failed (%s in a row): %s", inp.host_id, failures, message)
        return SyncHostResult(ok=False, host_status=status, consecutive_failures=failures, error=message,
                              rows_written=1, finished_at=_now_iso())

    def _apply(self, inp: SyncHostInput, observed: _Observed) -> SyncHostResult:
        now = datetime.now(UTC)
        result = SyncHostResult(ok=True)
        with self._sessions() as session:
            host = session.scalar(select(DockerHost).where(DockerHost.id == inp.host_id,
                                                           DockerHost.account_id == inp.account_id))
            if host is None:
                return SyncHostResult(ok=False, host_gone=True, error="host deleted", finished_at=_now_iso())
            base = {"account_id": inp.account_id, "host_id": host.id, "synced_at": now}
            result.containers = merge_inventory(session, DockerContainer, DockerContainer.container_id, "container_id",
                                                DockerContainer.host_id, host.id, observed.containers, base)
            result.images = merge_inventory(session, DockerImage, DockerImage.image_id, "image_id", DockerImage.host_id,
                                            host.id, observed.images, base)
            cursor = host.events_cursor
            result.events, cursor = _insert_events(session, host.id, inp.account_id, cursor, observed.events)
            changed_rows = sum(c.created + c.updated + c.deleted for c in (result.containers, result.images))
            changed_rows += result.events
            host_values: dict[str, Any] = {}
            if host.status != "connected" and host.status != "maintenance":
                host_values["status"] = "connected"
            if host.consecutive_failures:
                host_values["consecutive_failures"] = 0
            if host.last_error is not None:
                host_values["last_error"] = None
            if (host.metrics or {}) != observed.metrics:
                host_values["metrics"] = observed.metrics
            if cursor != host.events_cursor:
                host_values["events_cursor"] = cursor
            if host_values or changed_rows:
                host_values["last_synced_at"] = now
                session.execute(update(DockerHost).where(DockerHost.id == host.id).values(
                    updated_at=DockerHost.updated_at, **host_values))
                changed_rows += 1
            session.commit()
            result.host_status = host_values.get("status", host.status)
        result.rows_written = changed_rows
        result.finished_at = now.isoformat()
        activity.logger.info("docker host %s synced: %s", inp.host_id, result)
        return result


def merge_inventory(session: Session, model: Any, key_column: Any, key_name: str, parent_column: Any,
                    parent_id: int, observed: dict[str, dict[str, Any]], base: dict[str, Any]) -> SyncCounts:
    """Upsert ``observed`` (engine id -> stored values) into the parent's rows of ``model`` (a
    host's containers and images, a cluster's nodes and services) by fingerprint, and delete rows
    the engine no longer has: one select and at most three bulk statements, whatever the number
    of rows."""
    counts = SyncCounts()
    existing = {key: (row_id, print_) for row_id, key, print_ in session.execute(
        select(model.id, key_column, model.fingerprint).where(parent_column == parent_id))}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, values in observed.items():
        digest = fingerprint(values)
        known = existing.get(key)
        if known is None:
            inserts.append({**base, **values, key_name: key, "fingerprint": digest})
        elif known[1] != digest:
            updates.append({**values, "id": known[0], "fingerprint": digest, "synced_at": base["synced_at"]})
        else:
            counts.unchanged += 1
    gone = [row_id for key, (row_id, _) in existing.items() if key not in observed]
    if inserts:
        session.execute(insert(model), inserts)
    if updates:
        session.execute(update(model), updates)
    for start in range(0, len(gone), 500):
        session.execute(delete(model).where(model.id.in_(gone[start:start + 500])))
    counts.created, counts.updated, counts.deleted = len(inserts), len(updates), len(gone)
    return counts


def _insert_events(session: Session, host_id: int, account_id: int, cursor: int | None,
                   events: list[dict[str, Any]]) -> tuple[int, int | None]:
    """Insert events not stored yet (the window overlaps the last one by design); the new cursor is
    the newest event's time, so a round with no new event changes nothing."""
    if not events:
        return 0, cursor
    oldest = min(e["time_nano"] for e in events)
    seen = {tuple(row) for row in session.execute(
        select(DockerEvent.time_nano, DockerEvent.event_type, DockerEvent.action, DockerEvent.actor_id)
        .where(DockerEvent.host_id == host_id, DockerEvent.time_nano >= oldest))}
    fresh: list[dict[str, Any]] = []
    for event in events:
        key = (event["time_nano"], event["event_type"], event["action"], event["actor_id"])
        if key in seen:
            continue
        seen.add(key)
        fresh.append({**event, "host_id": host_id, "account_id": account_id})
    if fresh:
        session.execute(insert(DockerEvent), fresh)
    newest = max(e["time_nano"] for e in events)
    return len(fresh), max(newest, cursor or 0)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
