"""The private-address rule, the part that needs no lookup: whether a host, a git remote or an
image reference, as written, points at an internal target.

Workers and the API connect to addresses members type (notify and approval targets, callback
URLs, provider base URLs, checkout repositories, image registries). Left open, a member of any
account could reach the worker's own machine (loopback, the Docker socket through a local path,
``file://``) or its network (private ranges, the 169.254.169.254 metadata service). So such
targets are refused unless the operator sets ``DEVOPS_ALLOW_PRIVATE_TARGETS`` (the older
``DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS`` still counts): ``Settings.private_targets_allowed``.

This module decides from the text alone (save-time validation reads it: no I/O, nothing of ours
imported). A host written as a name is left undecided here; ``adapters.network_targets`` resolves
it, judges every address with :func:`resolved_host_check`, and pins what it approved.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE_TARGETS_SETTING = "DEVOPS_ALLOW_PRIVATE_TARGETS"
PRIVATE_TARGETS_HINT = f"set {PRIVATE_TARGETS_SETTING}=true to allow internal targets"
OLDER_PRIVATE_TARGETS_SETTING = "DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS"
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
# One part of an IPv4 address as the C resolver (inet_aton) reads it: hex, octal or decimal.
_NUMERIC_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
# DNS64 answers for IPv4-only hosts (RFC 6052): judged by the IPv4 address in the last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


# ---- addresses and hosts -------------------------------------------------------------------


def internal_address(address: IPAddress) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified or otherwise not global.
    ``not is_global`` covers what the named checks miss (100.64.0.0/10, home of some cloud
    metadata services); IPv4 carried inside IPv6 (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64)
    counts as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:
            return internal_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for carried in (address.ipv4_mapped, address.sixtofour, (address.teredo or (None, None))[1]):
            if carried is not None and internal_address(carried):
                return True
    return not address.is_global or address.is_multicast or address.is_unspecified or address.is_reserved


def bare_host(host: str) -> str:
    """``host`` without surrounding blanks and IPv6 brackets."""
    return host.strip().removeprefix("[").removesuffix("]")


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is written as one (``[::1]`` and ``fe80::1%eth0`` too)."""
    try:
        return ipaddress.ip_address(bare_host(host))
    except ValueError:
        return None


def numeric_address(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address the system resolver reads in a numeric ``host`` although it is no
    standard literal: ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``0``, and
    trailing dots (``127.0.0.1.``). One to four parts, each decimal, octal (leading 0) or hex
    (0x); the last part fills the bytes that remain. None when ``host`` is not numeric."""
    parts = bare_host(host).rstrip(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.match(part) for part in parts):
        return None
    values = [int(part[2:] or "0", 16) if part[:2].lower() == "0x" else int(part, 8 if part[0] == "0" else 10)
              for part in parts]
    *leading, last = values
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def local_name(host: str) -> bool:
    """Names that always mean this machine, whatever DNS says (RFC 6761)."""
    name = host.strip().rstrip(".").lower()
    return name in ("", "localhost", "localhost.localdomain") or name.endswith(".localhost")


def url_host_port(url: str) -> tuple[str, int]:
    """The host and port an http(s) ``url`` connects to (443 or 80 when none is written).
    Raises ``ValueError`` for an invalid port."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class HostCheck:
    """The outcome of checking one host. ``problem`` is the refusal (None: allowed); ``address``
    the internal address behind it (None for a name of this machine), or ``unresolvable``;
    ``addresses`` what an allowed host resolved to (for pinning)."""

    problem: str | None
    addresses: tuple[IPAddress, ...] = ()
    host: str = ""
    address: IPAddress | None = None
    unresolvable: bool = False


def resolved_host_check(host: str, addresses: list[IPAddress], *, what: str) -> HostCheck:
    """Judge the addresses ``host`` resolves to: every one must be global."""
    for address in addresses:
        if internal_address(address):
            return HostCheck(f"{what} host {host} resolves to {address}, {INTERNAL}; refused ({PRIVATE_TARGETS_HINT})",
                             host=host, address=address)
    return HostCheck(None, tuple(dict.fromkeys(addresses)), host=host)


def written_host_check(host: str, *, what: str) -> HostCheck | None:
    """The verdict on ``host`` as written (private targets not allowed), or None when only a
    lookup can tell: a name for this machine and an internal literal address are refused, a
    public literal is allowed, a numeric form is read as the resolver would read it (only its
    refusal is final here: a public one still goes through the resolver)."""
    bare = bare_host(host)
    if local_name(bare):
        return HostCheck(f"{what} host {bare or '(empty)'!r} names this machine, {INTERNAL}; "
                         f"refused ({PRIVATE_TARGETS_HINT})", host=bare)
    literal = literal_address(bare)
    if literal is not None:
        if internal_address(literal):
            return HostCheck(f"{what} host {bare} is {INTERNAL}; refused ({PRIVATE_TARGETS_HINT})",
                             host=bare, address=literal)
        return HostCheck(None, (literal,), host=bare)
    numeric = numeric_address(bare)
    if numeric is not None and internal_address(numeric):
        return resolved_host_check(bare, [numeric], what=what)
    return None


def worded_refusal(check: HostCheck, *, lead: str, allow: str = "targets") -> str:
    """A refusal in the wording the provider test, provider access, container callback and engine
    endpoint answers have always used (part of their API): ``<lead><host> resolves to <address>,
    a loopback, ...; refused (set DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true to allow internal
    <allow>)``, even for a literal address."""
    where = "names this machine" if check.address is None else f"resolves to {check.address}"
    return (f"{lead}{check.host} {where}, {INTERNAL}; refused "
            f"(set {OLDER_PRIVATE_TARGETS_SETTING}=true to allow internal {allow})")


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
    written = written_host_check(remote.host, what="the repository's")
    return literal_repository_problem(repository) or (written.problem if written else None)


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


IMAGE_REGISTRY = "the image's registry"


def static_image_problem(image: object, allow_private: bool) -> str | None:
    """The save-time part of the rule for an image reference (no lookups): its registry written
    as an internal address or ``localhost`` (private targets not allowed)."""
    if allow_private or not isinstance(image, str):
        return None
    registry = image_registry(image)
    written = written_host_check(registry[0], what=IMAGE_REGISTRY) if registry else None
    return written.problem if written else None
