"""Swarm ``ServiceSpec``\\ s from the service requests, and writing a spec back to the engine.

Pure translation of the request bodies (``docker service create`` / ``update`` semantics), the
host-network policy check, and the engine's own update endpoint (whole spec + version, or Swarm's
rollback to the previous spec) — used by :mod:`.swarm_services`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from adapters.docker_engine import EngineRefused
from adapters.engine_access import ACCOUNT_LABEL
from api import errors
from api.routes.swarm.shared import own_service
from api.swarm_schemas import ServiceCreate, ServiceUpdate, UpdateConfigIn
from services.container_specs import POLICY_HINT
from services.containers import policy_view

_NANO = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(round(seconds * _NANO))


def _update_config(config: UpdateConfigIn) -> dict[str, Any]:
    return {"Parallelism": config.parallelism, "Delay": _ns(config.delay), "FailureAction": config.failure_action,
            "Monitor": _ns(config.monitor), "MaxFailureRatio": config.max_failure_ratio, "Order": config.order}


def _env_list(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def service_spec(body: ServiceCreate) -> dict[str, Any]:
    """The engine's ``ServiceSpec`` for a create request (pure; ``command`` becomes the args, as
    ``docker service create IMAGE COMMAND...`` does)."""
    container: dict[str, Any] = {"Image": body.image, "Env": _env_list(body.env)}
    if body.command:
        container["Args"] = list(body.command)
    if body.healthcheck is not None:
        check = body.healthcheck
        container["Healthcheck"] = {"Test": list(check.test), "Interval": _ns(check.interval),
                                    "Timeout": _ns(check.timeout), "Retries": check.retries,
                                    "StartPeriod": _ns(check.start_period)}
    spec: dict[str, Any] = {
        "Name": body.name, "Labels": dict(body.labels),
        "TaskTemplate": {"ContainerSpec": container, "Networks": [{"Target": n} for n in body.networks]},
        "Mode": {"Replicated": {"Replicas": body.replicas}} if body.mode == "replicated" else {"Global": {}},
    }
    if body.update_config is not None:
        spec["UpdateConfig"] = _update_config(body.update_config)
    if body.rollback_config is not None:
        spec["RollbackConfig"] = _update_config(body.rollback_config)
    if body.ports:
        spec["EndpointSpec"] = {"Ports": [
            {"Protocol": p.protocol, "TargetPort": p.target, "PublishMode": p.mode,
             **({"PublishedPort": p.published} if p.published else {})} for p in body.ports]}
    return spec


def create_params(body: ServiceCreate) -> dict[str, Any]:
    """What a create records: the request without env values (their names only)."""
    params = body.model_dump(mode="json", exclude={"env"})
    params["env_names"] = sorted(body.env)
    return params


def update_params(body: ServiceUpdate) -> dict[str, Any]:
    """What an update records: the fields sent, without env values (their names only)."""
    params = body.model_dump(mode="json", exclude_unset=True, exclude={"env"})
    if "env" in body.model_fields_set:
        params["env_names"] = sorted(body.env or {})
    return params


def check_service_networks(session: Session, account_id: int, networks: list[str]) -> None:
    """The ``host`` network needs the account's container policy, as for templates."""
    allowed = policy_view(session, account_id).allow_host_network
    session.rollback()
    for index, network in enumerate(networks):
        if network == "host" and not allowed:
            raise errors.field_error(["networks", index], f"the host network is refused: {POLICY_HINT} "
                                                          "(allow_host_network)")


def set_replicas(spec: dict[str, Any], name: str, replicas: int) -> None:
    mode = spec.get("Mode") or {}
    if "Replicated" not in mode:
        raise EngineRefused("conflict", f"service {name} is not replicated (mode {next(iter(mode), '?')}): "
                                        "it has no replica count to set")
    mode["Replicated"]["Replicas"] = replicas


def apply_update(spec: dict[str, Any], name: str, body: ServiceUpdate, account_id: int) -> None:
    """Change the spec by the fields sent (``PATCH`` semantics); the owner label always stays."""
    fields = body.model_fields_set
    container = spec.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
    if "image" in fields:
        container["Image"] = body.image
    if "env" in fields:
        container["Env"] = _env_list(body.env or {})
    if "command" in fields:
        container.pop("Args", None)
        if body.command:
            container["Args"] = list(body.command)
    if "replicas" in fields:
        set_replicas(spec, name, body.replicas or 0)
    if "update_config" in fields and body.update_config is not None:
        spec["UpdateConfig"] = _update_config(body.update_config)
    if "labels" in fields:
        # the service keeps its owner whatever labels are sent
        owner = (spec.get("Labels") or {}).get(ACCOUNT_LABEL) or str(account_id)
        spec["Labels"] = {**(body.labels or {}), ACCOUNT_LABEL: owner}


def write_service(client: Any, name: str, mutate: Callable[[dict[str, Any]], None] | None,
                  rollback: bool = False) -> None:
    """Write the service's whole spec back (changed by ``mutate``) with its current version, or
    ask Swarm to go back to its previous spec; the engine's own endpoint, not a merge done here."""
    api = client.api
    current = own_service(client, name)
    spec = copy.deepcopy(current.get("Spec") or {})
    params: dict[str, Any] = {"version": current["Version"]["Index"]}
    if rollback:
        if not current.get("PreviousSpec"):
            raise EngineRefused("conflict", f"service {name} has no previous spec to roll back to")
        params["rollback"] = "previous"
    if mutate is not None:
        mutate(spec)
    api._result(api._post_json(api._url("/services/{0}/update", current["ID"]), data=spec, params=params),
                json=True)


def create_on_engine(client: Any, spec: dict[str, Any]) -> None:
    """``POST /services/create`` with the whole spec (docker-py's helper would rebuild it)."""
    api = client.api
    api._result(api._post_json(api._url("/services/create"), data=spec), json=True)
