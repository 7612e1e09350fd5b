"""What every container activity shares: the injected settings, sessions and clients, the engine
client per Docker host, and the instance row's status and events (written once per dedupe key)."""

from __future__ import annotations

import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError

from activities.containers.contract import INSTANCE_MISSING, ContainerInstanceInput, spec_error
from activities.containers.spec import ContainerSpec, container_name, owner_label
from adapters.artifact_store import ArtifactStore
from adapters.secret_backends import SecretResolutionError, resolve_secrets
from db.crypto import SecretBox
from db.models import ContainerEvent, ContainerInstance, DockerHost
from settings import Settings

DOCKER_TIMEOUT_SECONDS = 120


def utc_now() -> datetime:
    return datetime.now(UTC)


class ContainerActivitiesBase:
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

    def _host_of(self, inp: ContainerInstanceInput) -> int | None:
        with self._sessions() as session:
            instance = session.get(ContainerInstance, inp.instance_id)
            return instance.host_id if instance is not None else None
