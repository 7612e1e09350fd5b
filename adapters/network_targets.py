"""The private-address rule, in one place: where a member may point the service.

Workers and the API connect to addresses members type (notify and approval targets, callback
URLs, provider base URLs, checkout repositories, image registries). Left open, a member of any
account could reach the worker's own machine (loopback, the Docker socket through a local path,
``file://``) or its network (private ranges, the 169.254.169.254 metadata service). So such
targets are refused unless the operator sets ``DEVOPS_ALLOW_PRIVATE_TARGETS`` (the older
``DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS`` still counts): ``Settings.private_targets_allowed``.

Everything here is pure except the name resolution, which the callers ask for explicitly.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE_TARGETS_SETTING = "DEVOPS_ALLOW_PRIVATE_TARGETS"
PRIVATE_TARGETS_HINT = f"set {PRIVATE_TARGETS_SETTING}=true to allow internal targets"
INTERNAL = "a loopback, private or link-local address"

# git's URL schemes a pipeline may clone from; `file` only with private targets allowed.
GIT_SCHEMES = ("https", "http", "ssh", "git", "git+ssh", "ssh+git")
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418, "git+ssh": 22, "ssh+git": 22}
# `<transport>::<address>` runs the helper git-remote-<transport> (ext:: runs a command, fd:: uses a
# descriptor of the worker): never something a pipeline needs.
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
# scp-like `[user@]host:path` (git: a colon before any slash), with an optional [IPv6] host.
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(\[[^\]/]+\]|[^:/\[\]]+):")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


def internal_address(address: IPAddress) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified or otherwise not global.
    ``not is_global`` covers what the named checks miss (100.64.0.0/10, home of some cloud
    metadata services); IPv4 carried inside IPv6 (``::ffff:127.0.0.1``, 6to4, Teredo) counts
    as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        for carried in (address.ipv4_mapped, address.sixtofour, (address.teredo or (None, None))[1]):
            if carried is not None and internal_address(carried):
                return True
    return not address.is_global or address.is_multicast or address.is_unspecified


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is written as one (``[::1]`` and ``fe80::1%eth0`` too)."""
    text = host.strip().removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def local_name(host: str) -> bool:
    """Names that always mean this machine, whatever DNS says (RFC 6761)."""
    name = host.strip().rstrip(".").lower()
    return name in ("", "localhost", "localhost.localdomain") or name.endswith(".localhost")


def resolve(host: str, port: int | None = None, timeout: float | None = None) -> list[IPAddress]:
    """Every address ``host`` resolves to. Raises ``OSError`` (or ``TimeoutError``) when it does not."""
    def lookup() -> list[IPAddress]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]

    if timeout is None:
        return lookup()
    try:
        return _resolver.submit(lookup).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"resolving {host!r} took longer than {timeout:g}s") from None


@dataclass(frozen=True)
class HostCheck:
    """The outcome of checking one host: a refusal, or the addresses it resolved to (for pinning)."""

    problem: str | None
    addresses: tuple[IPAddress, ...] = ()


def check_host(host: str, port: int | None = None, *, what: str, timeout: float | None = None,
               unresolvable_ok: bool = False, resolve_names: bool = True) -> HostCheck:
    """Whether ``host`` may be connected to while private targets are not allowed. Literal
    addresses and ``localhost`` need no lookup; other names are resolved and every address must
    be global. An unresolvable name is a problem unless ``unresolvable_ok`` (a save-time check:
    the connection itself will fail later, or be checked again then). ``resolve_names=False``
    checks literal addresses and ``localhost`` only (no I/O: for pure validation)."""
    bare = host.strip().removeprefix("[").removesuffix("]")
    if local_name(bare):
        return HostCheck(f"{what} host {bare or '(empty)'!r} names this machine, {INTERNAL}; "
                         f"refused ({PRIVATE_TARGETS_HINT})")
    literal = literal_address(bare)
    if literal is not None:
        addresses = [literal]
    elif not resolve_names:
        return HostCheck(None)
    else:
        try:
            addresses = resolve(bare, port, timeout)
        except (OSError, UnicodeError, ValueError):
            if unresolvable_ok:
                return HostCheck(None)
            return HostCheck(f"{what} host {bare!r} does not resolve")
    for address in addresses:
        if internal_address(address):
            shown = " is" if literal is not None else f" resolves to {address},"
            return HostCheck(f"{what} host {bare}{shown} {INTERNAL}; refused ({PRIVATE_TARGETS_HINT})")
    return HostCheck(None, tuple(dict.fromkeys(addresses)))


def url_problem(url: str, *, what: str, timeout: float | None = None) -> str | None:
    """An http(s) URL whose host is internal (private targets not allowed), or None."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return f"{what} has an invalid port"
    default = 443 if parts.scheme == "https" else 80
    return check_host(parts.hostname or "", port or default, what=what, timeout=timeout).problem


# ---- git repositories ----------------------------------------------------------------------


@dataclass(frozen=True)
class GitRemote:
    """Where a ``with.repository`` points: ``kind`` is url, scp, local or helper."""

    kind: str
    scheme: str = ""
    host: str = ""
    port: int | None = None


def parse_git_remote(repository: str) -> GitRemote:
    """Classify a repository string the way git does (``git help clone``, GIT URLS)."""
    text = repository.strip()
    if _REMOTE_HELPER.match(text):
        return GitRemote("helper", scheme=text.split("::", 1)[0].lower())
    if _URL.match(text):
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        return GitRemote("url", scheme=scheme, host=parts.hostname or "",
                         port=port or _DEFAULT_PORTS.get(scheme))
    match = _SCP_LIKE.match(text)
    if match:
        return GitRemote("scp", scheme="ssh", host=match.group(1).strip("[]"), port=22)
    return GitRemote("local")


def literal_repository_problem(repository: str) -> str | None:
    """What is wrong with ``with.repository`` without looking anything up: a local path,
    ``file://``, a remote helper or an unknown scheme (private targets not allowed)."""
    remote = parse_git_remote(repository)
    if remote.kind == "helper":
        return f"the `{remote.scheme}::` remote helper form is not allowed; use an https, http, ssh or git URL"
    if remote.kind == "local" or remote.scheme == "file":
        return ("a local path or file:// URL would clone from the worker's own disk; refused "
                f"({PRIVATE_TARGETS_HINT}), or use an https, http, ssh or git URL")
    if remote.kind == "url" and remote.scheme not in GIT_SCHEMES:
        return f"scheme {remote.scheme!r} is not allowed; use an https, http, ssh or git URL"
    if not remote.host:
        return "the URL has no host"
    return None


def static_repository_problem(repository: str, allow_private: bool) -> str | None:
    """The save-time part of the rule (no lookups): remote helpers and unknown schemes always, and
    unless private targets are allowed local paths, ``file://`` and hosts written as an internal
    address or ``localhost``. Names are resolved when the step runs."""
    remote = parse_git_remote(repository)
    if remote.kind == "helper" or (remote.kind == "url" and remote.scheme not in (*GIT_SCHEMES, "file")):
        return literal_repository_problem(repository)
    if allow_private:
        return None
    return literal_repository_problem(repository) or check_host(
        remote.host, remote.port, what="the repository's", resolve_names=False).problem


def repository_check(repository: str, *, allow_private: bool, timeout: float | None = None) -> HostCheck:
    """The full run-time rule for ``with.repository``: the literal checks, then the host's
    addresses. Remote helpers are refused even when private targets are allowed."""
    remote = parse_git_remote(repository)
    if remote.kind == "helper":
        return HostCheck(literal_repository_problem(repository))
    if allow_private:
        if remote.kind == "url" and remote.scheme not in (*GIT_SCHEMES, "file"):
            return HostCheck(f"scheme {remote.scheme!r} is not allowed; use an https, http, ssh, git or file URL")
        return HostCheck(None)
    problem = literal_repository_problem(repository)
    if problem:
        return HostCheck(problem)
    return check_host(remote.host, remote.port, what="the repository's", timeout=timeout)


# ---- image references ----------------------------------------------------------------------


def image_registry(image: str) -> tuple[str, int | None] | None:
    """The registry host (and port) an image reference names, or None for Docker Hub. Docker
    reads the first path component as a registry only when it has a ``.`` or ``:``, is
    ``localhost``, or has upper-case letters; ``[::1]:5000/app`` is an IPv6 registry."""
    if "/" not in image:
        return None
    first = image.split("/", 1)[0]
    if not (("." in first) or (":" in first) or first == "localhost" or first != first.lower()):
        return None
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = first.partition(":")
    port = int(port_text) if port_text.isdigit() else None
    return host, port


def image_registry_problem(image: str, allow_private: bool, *, timeout: float | None = 1.0,
                           resolve_names: bool = True) -> str | None:
    """Why ``image`` may not be pulled: its registry is on a loopback, private or link-local
    address (private targets not allowed). Registry names are resolved with a short timeout
    (unless ``resolve_names=False``); a name that does not resolve (yet) is not refused here,
    the pull itself will fail."""
    if allow_private or not isinstance(image, str):
        return None
    registry = image_registry(image)
    if registry is None:
        return None
    host, port = registry
    check = check_host(host, port or 443, what="the image's registry", timeout=timeout, unresolvable_ok=True,
                       resolve_names=resolve_names)
    return check.problem
