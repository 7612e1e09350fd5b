"""What the engine says about a swarm, as the values we store and answer: nodes, services (mode,
replicas, ports, the stack they belong to) and running task counts. Pure functions of the
engine's JSON, shared by the sync round (:mod:`activities.swarm`) and the ``/swarm`` routes.
"""

from __future__ import annotations

from typing import Any

#: The label ``docker stack deploy`` puts on every service of a stack (its name).
STACK_LABEL = "com.docker.stack.namespace"


def node_values(node: dict[str, Any]) -> dict[str, Any]:
    spec = node.get("Spec") or {}
    description = node.get("Description") or {}
    status = node.get("Status") or {}
    return {
        "hostname": str(description.get("Hostname") or "")[:300],
        "role": str(spec.get("Role") or "worker")[:20],
        "availability": str(spec.get("Availability") or "active")[:20],
        "state": str(status.get("State") or "")[:20],
        "address": str(status.get("Addr") or "")[:100],
        "engine_version": str((description.get("Engine") or {}).get("EngineVersion") or "")[:50],
        "labels": dict(spec.get("Labels") or {}),
    }


def service_mode(spec: dict[str, Any]) -> tuple[str, int | None]:
    mode = spec.get("Mode") or {}
    if "Replicated" in mode:
        return "replicated", int((mode.get("Replicated") or {}).get("Replicas") or 0)
    if "Global" in mode:
        return "global", None
    name = next(iter(mode), "replicated")
    return str(name).lower()[:20], None


def service_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    ports = ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    kept = [{"protocol": p.get("Protocol") or "tcp", "target_port": p.get("TargetPort"),
             "published_port": p.get("PublishedPort"), "publish_mode": p.get("PublishMode") or "ingress"}
            for p in ports]
    return sorted(kept, key=lambda p: (p["target_port"] or 0, p["published_port"] or 0, p["protocol"]))


def service_values(service: dict[str, Any], running: int) -> dict[str, Any]:
    spec = service.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    labels = dict(spec.get("Labels") or {})
    mode, replicas = service_mode(spec)
    return {
        "name": str(spec.get("Name") or "")[:300],
        "image": str(container.get("Image") or "")[:500],
        "mode": mode,
        "replicas": replicas,
        "running_tasks": running,
        "update_config": dict(spec.get("UpdateConfig") or {}),
        "labels": labels,
        "ports": service_ports(service),
        "stack_name": labels.get(STACK_LABEL),
    }


def running_counts(tasks: list[dict[str, Any]]) -> dict[str, int]:
    """Running tasks per service id (tasks meant to run that do run)."""
    counts: dict[str, int] = {}
    for task in tasks:
        if (task.get("Status") or {}).get("State") == "running" and task.get("DesiredState") == "running":
            counts[task.get("ServiceID", "")] = counts.get(task.get("ServiceID", ""), 0) + 1
    return counts
