"""Container specs: a template, or a launch (template + overrides), resolved and checked.

A spec is a plain dict with the :data:`SPEC_FIELDS` of ``ContainerTemplate``. :func:`resolve_spec`
lays a template and a launch's overrides over the safe defaults; :func:`check_spec` (pure, no I/O)
returns every problem as a FastAPI-shaped error naming the field. The unsafe options —
``privileged``, ``network_mode: host``, ``cap_add`` and ``bind_mounts`` — are refused unless the
account's ``ContainerPolicy`` (given as a :class:`PolicyView`) allows that exact thing.

The resolved spec stored on a ``ContainerInstance`` also carries the fixed hardening the
executor applies (``cap_drop: ["ALL"]``, ``no_new_privileges: true``) so the row says exactly
how the container was run. It holds secret *names* only, never values.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from adapters.network_targets import check_host, image_registry_problem

# (low, high) of each numeric limit; the schemas use the same bounds.
CPU_RANGE = (0.1, 16.0)
MEMORY_RANGE = (16, 65536)
PIDS_RANGE = (16, 4096)
STORAGE_RANGE = (16, 102400)
TIMEOUT_RANGE = (1, 86400)
LIMITS: dict[str, tuple[float, float]] = {
    "cpu_limit": CPU_RANGE, "memory_mb": MEMORY_RANGE, "pids_limit": PIDS_RANGE,
    "storage_mb": STORAGE_RANGE, "timeout_seconds": TIMEOUT_RANGE,
}
NETWORK_MODES = ("none", "bridge", "host")
MAX_ARTIFACT_PATHS = 20
MAX_LABELS = 50
RESERVED_LABEL_PREFIX = "devops."
POLICY_HINT = "an account admin must allow it via PUT /container_policy"

# The safe defaults: the model's column defaults, in one place for merging.
DEFAULT_SPEC: dict[str, Any] = {
    "image": None,
    "command": [],
    "entrypoint": None,
    "working_dir": "/work",
    "env": {},
    "secret_env": {},
    "cpu_limit": 1.0,
    "memory_mb": 256,
    "pids_limit": 128,
    "storage_mb": 512,
    "network_mode": "none",
    "timeout_seconds": 600,
    "artifact_paths": [],
    "labels": {},
    "user": "65534:65534",
    "read_only_rootfs": True,
    "privileged": False,
    "cap_add": [],
    "bind_mounts": [],
}
SPEC_FIELDS = tuple(DEFAULT_SPEC)
# Maps merge key by key (a launch adds to the template's env); everything else replaces.
MERGED_MAPS = ("env", "secret_env", "labels")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
CAPABILITY = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")

# Docker's reference grammar (distribution/reference): [domain/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


@dataclass(frozen=True)
class PolicyView:
    """What the account's admin allows beyond the safe defaults (no row: nothing)."""

    allow_privileged: bool = False
    allow_host_network: bool = False
    allowed_capabilities: frozenset[str] = field(default_factory=frozenset)
    allowed_bind_paths: tuple[str, ...] = ()


def normalize_capability(name: str) -> str:
    """``net_admin`` and ``CAP_NET_ADMIN`` both mean ``NET_ADMIN``."""
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")


def clean_absolute_path(value: Any) -> str | None:
    """The normalised absolute path, or None when it is not absolute or has a ``..`` part."""
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        return None
    if ".." in value.split("/"):
        return None
    return posixpath.normpath(value).replace("//", "/")


def path_under(path: str, prefixes: Iterable[str]) -> bool:
    """Whether the clean absolute ``path`` is one of ``prefixes`` or below one."""
    for prefix in prefixes:
        clean = clean_absolute_path(prefix)
        if clean is None:
            continue
        if clean == "/" or path == clean or path.startswith(clean + "/"):
            return True
    return False


def resolve_spec(template: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The safe defaults, then the template's fields, then the launch's overrides (only the
    fields it sent). ``env``, ``secret_env`` and ``labels`` merge key by key."""
    spec = {name: _copy(value) for name, value in DEFAULT_SPEC.items()}
    for layer in (template or {}, overrides):
        for name in SPEC_FIELDS:
            if name not in layer:
                continue
            value = _copy(layer[name])
            if name in MERGED_MAPS and isinstance(value, dict) and isinstance(spec[name], dict):
                spec[name] = {**spec[name], **value}
            else:
                spec[name] = value
    return spec


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def hardened(spec: Mapping[str, Any], template_id: int | None = None) -> dict[str, Any]:
    """The spec as stored on an instance: plus the hardening every container gets."""
    return {**_copy(dict(spec)), "cap_drop": ["ALL"], "no_new_privileges": True, "template_id": template_id}


def _error(errors: list[dict[str, Any]], loc: tuple[Any, ...], message: str, kind: str = "value_error") -> None:
    errors.append({"loc": ["body", *loc], "msg": message, "type": kind})


def check_spec(spec: Mapping[str, Any], policy: PolicyView, secret_names: Iterable[str] | None = None,
               *, prefix: tuple[Any, ...] = (), allow_private_registries: bool = False) -> list[dict[str, Any]]:
    """Every problem of a resolved spec, as ``{"loc", "msg", "type"}`` (empty: it may run).
    ``secret_names`` are the account's existing secrets (None: not checked).
    Pass ``allow_private_registries=settings.private_targets_allowed``; by default an image from a
    registry on a loopback, private or link-local address is refused (the only I/O here: the
    registry's name is resolved, with a short timeout)."""
    errors: list[dict[str, Any]] = []
    known_secrets = None if secret_names is None else set(secret_names)

    def err(loc: tuple[Any, ...], message: str, kind: str = "value_error") -> None:
        _error(errors, (*prefix, *loc), message, kind)

    image = spec.get("image")
    if not isinstance(image, str) or not image:
        err(("image",), "an image is required (set image, or template_id of a template with one)", "missing")
    elif len(image) > 500 or not IMAGE_REFERENCE.match(image):
        err(("image",), f"{image[:100]!r} is not a valid image reference ([registry/]name[:tag][@digest], "
                        "lowercase name)")
    elif problem := image_registry_problem(image, allow_private_registries):
        err(("image",), problem)

    for name in ("command", "entrypoint"):
        value = spec.get(name)
        if value is None and name == "entrypoint":
            continue
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            err((name,), "must be a list of strings (an argv, not a shell line)")
        elif any("\x00" in item for item in value):
            err((name,), "may not contain NUL characters")

    working_dir = spec.get("working_dir")
    if clean_absolute_path(working_dir) is None or working_dir == "/":
        err(("working_dir",), "must be an absolute path inside the container, other than / and without '..'")

    for name, (low, high) in LIMITS.items():
        value = spec.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            err((name,), f"must be a number between {low:g} and {high:g}", "type_error")
        elif name != "cpu_limit" and not float(value).is_integer():
            err((name,), "must be a whole number", "type_error")
        elif not low <= value <= high:
            err((name,), f"must be between {low:g} and {high:g}")

    _check_env(spec, err, known_secrets)
    _check_artifacts(spec, err)
    _check_labels(spec, err)

    user = spec.get("user")
    if user is not None and (not isinstance(user, str) or not USER.match(user)):
        err(("user",), "must be user[:group] (names or numeric ids), or null for the image's own user")
    for name in ("read_only_rootfs", "privileged"):
        if not isinstance(spec.get(name), bool):
            err((name,), "must be true or false", "type_error")

    _check_unsafe(spec, policy, err)
    return errors


def require_public_registry(image: Any, allow_private: bool, loc: Iterable[Any]) -> None:
    """422 naming ``loc`` when ``image`` comes from a registry on a loopback, private or
    link-local address and private targets are not allowed (blocking: resolves the registry)."""
    problem = image_registry_problem(image, allow_private) if isinstance(image, str) else None
    if problem:
        from domain import errors

        raise errors.field_error(list(loc), problem)


def require_public_registry_url(url: Any, allow_private: bool, loc: Iterable[Any]) -> None:
    """422 naming ``loc`` when a registry URL (``http(s)://host[:port]``) is on a loopback, private
    or link-local address and private targets are not allowed; an unresolvable name passes."""
    if allow_private or not isinstance(url, str):
        return
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return  # the schema's own URL check answers for that
    problem = check_host(parts.hostname or "", port, what="the registry URL's", timeout=1.0,
                         unresolvable_ok=True).problem
    if problem:
        from domain import errors

        raise errors.field_error(list(loc), problem)


async def require_public_registries(allow_private: bool, *images: tuple[Any, Iterable[Any]]) -> None:
    """``require_public_registry`` for each ``(image, loc)``, off the event loop."""
    if allow_private:
        return
    for image, loc in images:
        await asyncio.to_thread(require_public_registry, image, allow_private, loc)


def _check_env(spec: Mapping[str, Any], err: Any, known_secrets: set[str] | None) -> None:
    env = spec.get("env")
    if not isinstance(env, dict):
        err(("env",), "must be an object of NAME: value", "type_error")
        env = {}
    for name, value in env.items():
        if not ENV_NAME.match(str(name)):
            err(("env", name), f"{str(name)[:100]!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        elif not isinstance(value, str):
            err(("env", name), "must be a string", "type_error")
        elif "\x00" in value:
            err(("env", name), "may not contain NUL characters")
    secret_env = spec.get("secret_env")
    if not isinstance(secret_env, dict):
        err(("secret_env",), "must be an object of ENV_NAME: secret name", "type_error")
        return
    for name, secret in secret_env.items():
        if not ENV_NAME.match(str(name)):
            err(("secret_env", name),
                f"{str(name)[:100]!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        elif name in env:
            err(("secret_env", name), f"{name} is also set in env; set it in one of them")
        elif not isinstance(secret, str) or not SECRET_NAME.match(secret):
            err(("secret_env", name), "must be the name of one of the account's secrets")
        elif known_secrets is not None and secret not in known_secrets:
            err(("secret_env", name), f"the account has no secret named {secret!r}; create it with PUT /secrets")


def _check_artifacts(spec: Mapping[str, Any], err: Any) -> None:
    paths = spec.get("artifact_paths")
    if not isinstance(paths, list):
        err(("artifact_paths",), "must be a list of absolute paths", "type_error")
        return
    if len(paths) > MAX_ARTIFACT_PATHS:
        err(("artifact_paths",), f"at most {MAX_ARTIFACT_PATHS} paths")
    for index, path in enumerate(paths):
        if clean_absolute_path(path) is None or path == "/":
            err(("artifact_paths", index), "must be an absolute path inside the container, other than / and "
                                           "without '..'")


def _check_labels(spec: Mapping[str, Any], err: Any) -> None:
    labels = spec.get("labels")
    if not isinstance(labels, dict):
        err(("labels",), "must be an object of string: string", "type_error")
        return
    if len(labels) > MAX_LABELS:
        err(("labels",), f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if str(key).startswith(RESERVED_LABEL_PREFIX):
            err(("labels", key), f"label keys starting with {RESERVED_LABEL_PREFIX!r} are reserved for the service")
        elif not LABEL_KEY.match(str(key)):
            err(("labels", key), "a label key is letters, digits and . _ / - (at most 128)")
        elif not isinstance(value, str) or len(value) > 1000:
            err(("labels", key), "a label value is a string of at most 1000 characters", "type_error")


def _check_unsafe(spec: Mapping[str, Any], policy: PolicyView, err: Any) -> None:
    if spec.get("privileged") is True and not policy.allow_privileged:
        err(("privileged",), f"privileged mode is refused: {POLICY_HINT} (allow_privileged)")

    network = spec.get("network_mode")
    if network not in NETWORK_MODES:
        err(("network_mode",), f"must be one of {', '.join(NETWORK_MODES)}")
    elif network == "host" and not policy.allow_host_network:
        err(("network_mode",), f"the host network is refused: {POLICY_HINT} (allow_host_network)")

    caps = spec.get("cap_add")
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        err(("cap_add",), "must be a list of capability names", "type_error")
    else:
        allowed = {normalize_capability(c) for c in policy.allowed_capabilities}
        for index, cap in enumerate(caps):
            name = normalize_capability(cap)
            if not CAPABILITY.match(name):
                err(("cap_add", index), f"{cap[:50]!r} is not a capability name (e.g. NET_BIND_SERVICE)")
            elif name not in allowed:
                err(("cap_add", index), f"capability {name} is refused: {POLICY_HINT} (allowed_capabilities)")

    mounts = spec.get("bind_mounts")
    if not isinstance(mounts, list):
        err(("bind_mounts",), "must be a list of {source, target, read_only}", "type_error")
        return
    for index, mount in enumerate(mounts):
        if not isinstance(mount, dict) or set(mount) - {"source", "target", "read_only"}:
            err(("bind_mounts", index), "must be {source, target, read_only}", "type_error")
            continue
        source = clean_absolute_path(mount.get("source"))
        if source is None:
            err(("bind_mounts", index, "source"), "must be an absolute host path without '..'")
        elif not path_under(source, policy.allowed_bind_paths):
            err(("bind_mounts", index, "source"),
                f"bind mounts of host path {source} are refused: {POLICY_HINT} (allowed_bind_paths)")
        target = clean_absolute_path(mount.get("target"))
        if target is None or target == "/":
            err(("bind_mounts", index, "target"), "must be an absolute path inside the container, other than / "
                                                  "and without '..'")
        if not isinstance(mount.get("read_only", True), bool):
            err(("bind_mounts", index, "read_only"), "must be true or false", "type_error")


def normalized_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A checked spec tidied for storage: capability names upper-cased without ``CAP_``, bind
    paths normalised, ``read_only`` explicit."""
    out = _copy(dict(spec))
    out["cap_add"] = [normalize_capability(c) for c in out.get("cap_add") or []]
    out["bind_mounts"] = [
        {"source": clean_absolute_path(m["source"]), "target": clean_absolute_path(m["target"]),
         "read_only": bool(m.get("read_only", True))}
        for m in out.get("bind_mounts") or []
    ]
    out["artifact_paths"] = [clean_absolute_path(p) for p in out.get("artifact_paths") or []]
    if isinstance(out.get("cpu_limit"), (int, float)):
        out["cpu_limit"] = float(out["cpu_limit"])
    return out


# ---- compose files (swarm stacks) -----------------------------------------------------------------
#
# A stack's services pass the same policy as templates: privileged, cap_add, the host network and
# bind mounts need the account's ContainerPolicy to allow exactly that; options the policy has no
# switch for (host pid/ipc/user namespaces, devices, unconfined security profiles, a cgroup parent,
# joining another container's namespaces) are refused; so are files the ``docker`` CLI would read
# on the API's own machine (``env_file``, secrets/configs from ``file``/``environment``).

REFUSED_COMPOSE_KEYS = {
    "devices": "devices give the container the host's hardware",
    "device_cgroup_rules": "device cgroup rules give the container the host's hardware",
    "cgroup_parent": "a cgroup parent places the container outside its limits",
    "cgroup": "the host cgroup namespace is refused",
    "userns_mode": "the host user namespace is refused",
    "env_file": "an env_file is read from the API's own machine; put the values in `environment`",
    "volumes_from": "volumes_from reaches another container's volumes",
    "external_links": "external_links reach containers outside the stack",
}
_NAMESPACE_KEYS = ("pid", "ipc", "network_mode", "userns_mode", "uts")


def _compose_loc(*parts: Any) -> tuple[Any, ...]:
    return ("compose", *parts)


def _host_network_names(document: Mapping[str, Any]) -> set[str]:
    """Keys of the top-level ``networks`` that are the engine's ``host`` network."""
    found = {"host"}
    networks = document.get("networks")
    if isinstance(networks, dict):
        for key, definition in networks.items():
            if not isinstance(definition, dict):
                continue
            external = definition.get("external")
            names = {definition.get("name"), external.get("name") if isinstance(external, dict) else None}
            if "host" in names:
                found.add(str(key))
    return found


def _bind_volumes(document: Mapping[str, Any]) -> dict[str, str]:
    """Top-level volumes that are binds in disguise (local driver with ``device``): key -> path."""
    found: dict[str, str] = {}
    volumes = document.get("volumes")
    if isinstance(volumes, dict):
        for key, definition in volumes.items():
            opts = definition.get("driver_opts") if isinstance(definition, dict) else None
            if isinstance(opts, dict) and opts.get("device") is not None:
                found[str(key)] = str(opts.get("device"))
    return found


def check_compose(document: Mapping[str, Any], policy: PolicyView) -> list[dict[str, Any]]:
    """Every policy problem of a parsed compose file, each naming ``compose.services.<name>.<key>``
    (or the top-level entry); empty when the stack may be deployed."""
    errors: list[dict[str, Any]] = []

    def err(loc: tuple[Any, ...], message: str) -> None:
        _error(errors, _compose_loc(*loc), message)

    host_networks = _host_network_names(document)
    disguised = _bind_volumes(document)
    for kind in ("secrets", "configs"):
        entries = document.get(kind)
        if isinstance(entries, dict):
            for key, definition in entries.items():
                if isinstance(definition, dict) and ("file" in definition or "environment" in definition):
                    which = "file" if "file" in definition else "environment"
                    err((kind, str(key), which), f"{kind} from `{which}` are read on the API's own machine; "
                                                 "create it with the secrets/configs routes and use `external: true`")
    for key, device in disguised.items():
        source = clean_absolute_path(device)
        if source is None or not path_under(source, policy.allowed_bind_paths):
            err(("volumes", key, "driver_opts", "device"),
                f"a volume bound to host path {device!r} is refused: {POLICY_HINT} (allowed_bind_paths)")
    services = document.get("services")
    if not isinstance(services, dict):
        return errors
    for raw_name, service in services.items():
        name = str(raw_name)
        if not isinstance(service, dict):
            continue
        for key in sorted(set(service) & set(REFUSED_COMPOSE_KEYS)):
            if service[key] not in (None, [], {}, ""):
                err(("services", name, key), f"{REFUSED_COMPOSE_KEYS[key]}: refused")
        _check_compose_service(name, service, policy, host_networks, err)
    return errors


def _check_compose_service(name: str, service: Mapping[str, Any], policy: PolicyView, host_networks: set[str],
                           err: Any) -> None:
    loc = ("services", name)
    if service.get("privileged") is True and not policy.allow_privileged:
        err((*loc, "privileged"), f"privileged mode is refused: {POLICY_HINT} (allow_privileged)")
    for key in _NAMESPACE_KEYS:
        value = service.get(key)
        if value is None or key == "userns_mode":
            continue
        text = str(value).strip().lower()
        if key == "network_mode" and text == "host":
            if not policy.allow_host_network:
                err((*loc, key), f"the host network is refused: {POLICY_HINT} (allow_host_network)")
        elif text == "host" or ":" in text:
            err((*loc, key), f"{key}: {value!s:.50} shares the host's or another container's namespace: refused")
        elif key == "network_mode" and text not in ("bridge", "none", "default"):
            err((*loc, key), f"network_mode must be bridge or none (or host with the policy), not {value!s:.50}")
    networks = service.get("networks")
    network_names = list(networks) if isinstance(networks, (dict, list)) else []
    for network in network_names:
        if str(network) in host_networks and not policy.allow_host_network:
            err((*loc, "networks", str(network)), f"the host network is refused: {POLICY_HINT} (allow_host_network)")
    caps = service.get("cap_add")
    if caps is not None:
        allowed = {normalize_capability(c) for c in policy.allowed_capabilities}
        if not isinstance(caps, list):
            err((*loc, "cap_add"), "must be a list of capability names")
        else:
            for index, cap in enumerate(caps):
                if normalize_capability(str(cap)) not in allowed:
                    err((*loc, "cap_add", index), f"capability {normalize_capability(str(cap))} is refused: "
                                                  f"{POLICY_HINT} (allowed_capabilities)")
    for index, option in enumerate(service.get("security_opt") or []):
        text = str(option).lower().replace("=", ":")
        if "unconfined" in text or text.startswith("label:disable") or text in ("no-new-privileges:false",):
            err((*loc, "security_opt", index), f"{str(option)[:60]!r} turns a protection off: refused")
    volumes = service.get("volumes")
    for index, volume in enumerate(volumes if isinstance(volumes, list) else []):
        source = _bind_source(volume)
        if source is None:
            continue
        clean = clean_absolute_path(source)
        if clean is None:
            err((*loc, "volumes", index), f"bind source {source[:100]!r} must be an absolute host path without "
                                          "'..' (relative paths are on the API's machine)")
        elif not path_under(clean, policy.allowed_bind_paths):
            err((*loc, "volumes", index), f"bind mounts of host path {clean} are refused: {POLICY_HINT} "
                                          "(allowed_bind_paths)")


def _bind_source(volume: Any) -> str | None:
    """The host path a service volume binds (None: a named volume or a tmpfs)."""
    if isinstance(volume, dict):
        kind = str(volume.get("type") or "volume")
        if kind in ("bind", "npipe"):
            return str(volume.get("source") or "")
        return None
    text = str(volume)
    if ":" not in text:
        return None  # an anonymous volume at that container path
    source = text.split(":", 1)[0]
    return source if source.startswith(("/", ".", "~")) or source == "" else None
