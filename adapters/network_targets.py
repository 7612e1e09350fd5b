"""The private-address rule, the part that looks names up: resolve a host, judge every address it
resolves to, and hand the approved addresses to the caller for pinning.

What a host, a git remote or an image reference says as written is decided in
``domain.network_rules`` (pure, read by save-time validation too); its names are re-exported here
for the callers that check at run time. Private targets are refused unless
``Settings.private_targets_allowed`` (the callers ask it).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket

from domain.network_rules import (
    GIT_SCHEMES,
    IMAGE_REGISTRY,
    INTERNAL,
    HostCheck,
    IPAddress,
    bare_host,
    image_registry,
    internal_address,
    literal_address,
    literal_repository_problem,
    parse_git_remote,
    resolved_host_check,
    static_image_problem,
    url_host_port,
    written_host_check,
)

# this module's own names, and the pure ones its run-time callers import from here
__all__ = ["INTERNAL", "HostCheck", "IPAddress", "check_host", "image_registry_problem", "internal_address",
           "literal_address", "parse_git_remote", "repository_check", "resolve", "url_problem"]

_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


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


def check_host(host: str, port: int | None = None, *, what: str, timeout: float | None = None,
               unresolvable_ok: bool = False) -> HostCheck:
    """Whether ``host`` may be connected to while private targets are not allowed. What the host
    says as written needs no lookup (``domain.network_rules.written_host_check``); other names are
    resolved and every address must be global. An unresolvable name is a problem unless
    ``unresolvable_ok`` (a save-time check: the connection itself will fail later, or be checked
    again then)."""
    written = written_host_check(host, what=what)
    if written is not None:
        return written
    bare = bare_host(host)
    try:
        addresses = resolve(bare, port, timeout)
    except (OSError, UnicodeError, ValueError):
        if unresolvable_ok:
            return HostCheck(None)
        return HostCheck(f"{what} host {bare!r} does not resolve", host=bare, unresolvable=True)
    return resolved_host_check(bare, addresses, what=what)


def url_problem(url: str, *, what: str, timeout: float | None = None) -> str | None:
    """An http(s) URL whose host is internal (private targets not allowed), or None."""
    try:
        host, port = url_host_port(url)
    except ValueError:
        return f"{what} has an invalid port"
    return check_host(host, port, what=what, timeout=timeout).problem


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


def image_registry_problem(image: str, allow_private: bool, *, timeout: float | None = 1.0) -> str | None:
    """Why ``image`` may not be pulled: its registry is on a loopback, private or link-local
    address (private targets not allowed). Registry names are resolved with a short timeout; a
    name that does not resolve (yet) is not refused here, the pull itself will fail."""
    problem = static_image_problem(image, allow_private)
    if problem or allow_private or not isinstance(image, str) or (registry := image_registry(image)) is None:
        return problem
    host, port = registry
    return check_host(host, port or 443, what=IMAGE_REGISTRY, timeout=timeout, unresolvable_ok=True).problem
