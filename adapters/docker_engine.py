"""The Docker engine endpoint as the API and the worker reach it (Docker hosts and Swarm managers).

:func:`docker_client` opens a ``docker.DockerClient`` for a :class:`HostTarget`: ``unix://``
sockets as they are, ``tcp://`` with TLS from the decrypted CA, certificate and key, written to a
private temporary directory (mode 0700) that lives as long as the client. Timeouts are short: an
engine that does not answer must fail quickly, not hold a thread. :class:`EngineProblem` says what a
failure means; callers map its kinds to their own answers. Who may register which endpoint, and
which engines are shared between accounts, is :mod:`adapters.engine_access`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from db.crypto import SecretBox
from db.models import ManagedEngineEndpoint
from settings import Settings

#: Seconds one engine call may take before the round (or request) gives up on the engine.
ENGINE_TIMEOUT_SECONDS = 15


# ---- connecting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostTarget:
    """Where and how to reach an engine; TLS material decrypted (never logged or returned).
    ``scope_account`` is set when the engine is shared (see :func:`adapters.engine_access.engine_shared`): then only
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


def engine_target(row: ManagedEngineEndpoint, box: SecretBox, scope_account: int | None = None) -> HostTarget:
    """Where and how to reach a host's engine or a cluster's manager (TLS material decrypted)."""
    def plain(token: bytes | None) -> str | None:
        return box.decrypt(token) if token else None

    return HostTarget(endpoint=row.endpoint, tls_ca=plain(row.encrypted_tls_ca),
                      tls_cert=plain(row.encrypted_tls_cert), tls_key=plain(row.encrypted_tls_key),
                      scope_account=scope_account)


host_target = engine_target


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


class EngineRefused(Exception):
    """A refusal found by us around an engine call (an object of another account, a tag taken,
    an error in a streamed answer of a build, pull or push), classified like the engine's own."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.problem = EngineProblem(kind, message)


def refused_not_found(kind: str, ident: str) -> EngineRefused:
    """What the engine itself says of a missing object: other accounts' objects look the same."""
    return EngineRefused("not_found", f"No such {kind}: {ident}")


def problem_of(exc: BaseException, endpoint: str) -> EngineProblem | None:
    """:func:`classify`, plus our own refusals and the SDK's argument errors (``bad_request``)."""
    if isinstance(exc, EngineRefused):
        return exc.problem
    if isinstance(exc, (docker.errors.InvalidArgument, docker.errors.InvalidRepository)):
        return EngineProblem("bad_request", str(exc))
    return classify(exc, endpoint)


def target_scope(client: Any) -> HostTarget:
    """The target a client was opened for by the API (its account scope says what may be seen)."""
    return client.devops_target


# ---- what an engine lists, as we store it ---------------------------------------------------------


# "Up 3 minutes (healthy)" -> "Up (healthy)", "Exited (0) 2 hours ago" -> "Exited (0)": the engine's
# status text carries the time since the change, which would make every round rewrite every row.
_RELATIVE_TIME = re.compile(r"\s+(?:Less than a second|About an? \w+|\d+ \w+)(?: ago)?")


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


# ---- swarm managers ------------------------------------------------------------------------------


class NotASwarmManager(Exception):
    """The endpoint answers, but its engine is not a manager of an active swarm."""


def manager_info(client: docker.DockerClient) -> dict[str, Any]:
    """``docker info`` of a manager; :class:`NotASwarmManager` when the engine is not one."""
    info = client.api.info()
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise NotASwarmManager(f"the engine at this endpoint is not part of a swarm "
                               f"(swarm state {swarm.get('LocalNodeState') or 'unknown'!r}): not a swarm manager")
    if not swarm.get("ControlAvailable"):
        raise NotASwarmManager("the engine at this endpoint is a swarm worker, not a swarm manager")
    return info
