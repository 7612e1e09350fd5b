"""Which engine endpoints an account may register, and which engines are shared.

An endpoint is *local* when it reaches this machine: unix:// or npipe:// sockets, localhost,
loopback or unspecified addresses, an address of one of this machine's interfaces, a name that
resolves to one of those, or the worker's own DOCKER_HOST. Local engines hold the worker's own
containers (and often every tenant's), so accounts may register them only when the operator lists
them in DEVOPS_ENGINE_ALLOWLIST (or in development). A non-empty allowlist is strict: endpoints
matching none of its patterns are refused, local or not. Other ``tcp://`` hosts on internal
addresses follow the private-targets rule of :mod:`adapters.network_targets`, and a ``unix://``
endpoint must name an existing socket.

An engine is *shared* when it is local or allowlisted (an operator's engine), or when more than
one account registered the same normalised endpoint (as a host or a cluster). Through a shared
engine an account sees and touches only objects labelled ``devops.account=<its id>``; anything
else answers 404.
"""

from __future__ import annotations

import errno
import fnmatch
import ipaddress
import os
import posixpath
import socket
import stat
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters import network_targets
from adapters.docker_engine import HostTarget
from db.models import DockerHost, ManagedEngineEndpoint, SwarmCluster
from domain.errors import field_error
from domain.network_rules import worded_refusal
from settings import Settings

#: The tables holding endpoints: an engine registered in any of them by two accounts is shared.
ENDPOINT_MODELS: tuple[type[ManagedEngineEndpoint], ...] = (DockerHost, SwarmCluster)

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
    for model in ENDPOINT_MODELS:
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


# ---- may an account connect there ----------------------------------------------------------------------


def private_address_refusal(host: str, port: int, what: str) -> str | None:
    """Why ``host`` must not be connected to while private targets are not allowed: the one rule
    of :func:`adapters.network_targets.check_host`, in the words the API has always used."""
    check = network_targets.check_host(host, port, what=f"the {what}'s")
    if check.unresolvable:
        return f"the {what}'s host {host!r} does not resolve"
    return worded_refusal(check, lead=f"the {what}'s host ") if check.problem else None


def endpoint_policy_refusal(settings: Settings, endpoint: str) -> str | None:
    """The engine allowlist's word on ``endpoint`` (blocking: may resolve the host name)."""
    return endpoint_refusal(endpoint, settings.engine_allowlist, settings.environment, is_local_endpoint(endpoint))


def require_endpoint(settings: Settings, endpoint: str) -> None:
    """Refuse (422 on ``endpoint``) what an account may not register: the allowlist's refusal, a
    ``unix://`` path that is not a socket here, a ``tcp://`` host on an internal address (unless
    private targets are allowed or the operator listed the endpoint). Blocking."""
    refusal = endpoint_policy_refusal(settings, endpoint)
    if refusal:
        raise field_error(["endpoint"], refusal, "endpoint")
    parts = urlsplit(endpoint)
    if parts.scheme == "unix":
        try:
            mode = os.stat(parts.path).st_mode
        except OSError:
            raise field_error(["endpoint"], f"{parts.path} does not exist on the API's machine", "endpoint") from None
        if not stat.S_ISSOCK(mode):
            raise field_error(["endpoint"], f"{parts.path} is not a socket", "endpoint")
        return
    if settings.private_targets_allowed or allowlisted(endpoint, settings.engine_allowlist):
        return  # the operator listed it: internal addresses are expected there
    refusal = private_address_refusal(parts.hostname or "", parts.port or 2375, "endpoint")
    if refusal:
        raise field_error(["endpoint"], refusal, "endpoint")
