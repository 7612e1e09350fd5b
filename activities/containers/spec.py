"""From an instance's stored spec to the engine's ``containers.create`` arguments: the spec read
defensively with the template defaults, the container's deterministic name and its labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from docker.types import Mount

from activities.containers.contract import spec_error
from db.models import ContainerInstance
from settings import Settings

MIB = 1024 * 1024


def container_name(instance_id: int, settings: Settings) -> str:
    """Deterministic per instance and deployment: two deployments (databases) sharing an engine
    number their instances independently, so the owner mark keeps their names apart."""
    return f"devops-{owner_label(settings)[:8]}-c{instance_id}"


def owner_label(settings: Settings) -> str:
    """This deployment's mark on its containers (the database identifies a deployment)."""
    return hashlib.sha256(settings.resolved_database_url.encode()).hexdigest()[:16]


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
