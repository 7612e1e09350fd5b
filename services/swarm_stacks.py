"""Stacks on a Swarm cluster: the compose file checked and labelled, the manager checked, the
``docker`` CLI run against it, and the stack's row.

- :func:`validate_compose` (pure): a file ``docker stack deploy`` takes; YAML errors say the line
  and column, a service without an image is named (``compose.services.<name>.image``).
- :func:`checked_compose`: the account's container policy applied (as for templates) and
  ``devops.account`` added on every service, its containers, networks and volumes — on a shared
  engine that label is what makes the stack the account's.
- :func:`run_cli`: ``docker stack deploy|rm`` with argv only and an environment of ours alone
  (``DOCKER_HOST`` at the cluster, TLS PEMs in a private directory). Stacks are a CLI feature:
  the engine API has no stack endpoint.

Blocking, on the caller's session; refusals are domain errors (``Invalid`` on ``compose...``) or
:class:`adapters.docker_engine.EngineRefused` inside an engine call.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Any

import docker.errors
import yaml
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from adapters.docker_engine import EngineRefused, HostTarget, refused_not_found, target_scope
from adapters.engine_access import ACCOUNT_LABEL, owns
from adapters.swarm_engine import STACK_LABEL
from db.models import SwarmStack
from domain.errors import field_error, unprocessable
from domain.safe_documents import load_yaml
from services.container_specs import RESERVED_LABEL_PREFIX, check_compose
from services.containers import policy_view

STACK_CLI_TIMEOUT_SECONDS = 180
#: ``(kind, key, engine name)`` of a top-level object a stack uses without creating it.
External = tuple[str, str, str]


# ---- the compose file --------------------------------------------------------------------------------------


def validate_compose(text: str) -> dict[str, str]:
    """Check a compose file for ``docker stack deploy`` and answer its images by service (pure).
    Problems raise a 422 on ``compose`` (YAML errors say the line and column)."""
    try:
        # bounded (alias bombs, depth, size): a refusal raises DocumentRefused → 413/422 on `compose`
        document = load_yaml(text, ("body", "compose"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise field_error(["compose"], f"the compose file is not valid YAML: {where}{problem}", "yaml") from None
    except yaml.YAMLError as exc:
        raise field_error(["compose"], f"the compose file is not valid YAML: {exc}", "yaml") from None
    if not isinstance(document, dict):
        raise field_error(["compose"], "a compose file is a mapping with a `services` key")
    version = document.get("version")
    if version is not None and (not isinstance(version, (str, int, float)) or not str(version).startswith("3")):
        raise field_error(["compose", "version"], "docker stack deploy needs compose file format 3.x "
                                                  f"(version {version!r} given), or no version at all")
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        raise field_error(["compose", "services"], "`services` must map at least one service name to its definition")
    images: dict[str, str] = {}
    for name, definition in services.items():
        if not isinstance(definition, dict):
            raise field_error(["compose", "services", str(name)], "a service definition is a mapping")
        image = definition.get("image")
        if not isinstance(image, str) or not image.strip():
            raise field_error(["compose", "services", str(name), "image"],
                              "every service of a stack needs an `image` (a swarm does not build images)")
        images[str(name)] = image.strip()
    return images


def _label_map(value: Any, loc: list[Any], owner: str) -> dict[str, str]:
    """Compose labels (a mapping or a ``KEY=value`` list) with ``devops.account`` added; keys of
    the service's own prefix are refused (422)."""
    if isinstance(value, list):
        pairs = [str(item).split("=", 1) for item in value]
        labels = {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    elif isinstance(value, dict):
        labels = {str(k): "" if v is None else str(v) for k, v in value.items()}
    elif value is None:
        labels = {}
    else:
        raise field_error(loc, "labels are a mapping or a list of KEY=value")
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise field_error([*loc, key], f"label keys starting with {RESERVED_LABEL_PREFIX!r} are reserved "
                                           "for the service")
    return {**labels, ACCOUNT_LABEL: owner}


def _externals(document: dict[str, Any]) -> list[External]:
    """The top-level networks, volumes, secrets and configs the stack uses without creating them
    (``external``)."""
    found = []
    for kind in ("networks", "volumes", "secrets", "configs"):
        entries = document.get(kind)
        for key, definition in entries.items() if isinstance(entries, dict) else ():
            if not isinstance(definition, dict) or not definition.get("external"):
                continue
            external = definition.get("external")
            name = (external.get("name") if isinstance(external, dict) else None) or definition.get("name") or key
            found.append((kind, str(key), str(name)))
    return found


def checked_compose(session: Session, account_id: int, text: str) -> tuple[str, list[External]]:
    """The compose file checked against the account's container policy (422 naming the service and
    key) and returned with ``devops.account`` on every service, its containers, networks and
    volumes; and the external objects it uses."""
    document = load_yaml(text, ("body", "compose"))
    problems = check_compose(document, policy_view(session, account_id))
    session.rollback()
    if problems:
        raise unprocessable(problems)
    owner = str(account_id)
    for name, service in document["services"].items():
        loc = ["compose", "services", str(name)]
        service["labels"] = _label_map(service.get("labels"), [*loc, "labels"], owner)
        deploy = service.get("deploy")
        if deploy is None:
            deploy = service["deploy"] = {}
        if not isinstance(deploy, dict):
            raise field_error([*loc, "deploy"], "deploy is a mapping")
        deploy["labels"] = _label_map(deploy.get("labels"), [*loc, "deploy", "labels"], owner)
    for kind in ("networks", "volumes"):
        for key, definition in (document.get(kind) or {}).items() if isinstance(document.get(kind), dict) else ():
            if definition is None:
                definition = document[kind][key] = {}
            if isinstance(definition, dict) and not definition.get("external"):
                definition["labels"] = _label_map(definition.get("labels"), ["compose", kind, str(key), "labels"],
                                                  owner)
    return yaml.safe_dump(document, sort_keys=False), _externals(document)


# ---- the manager ---------------------------------------------------------------------------------------------


def check_externals(client: Any, externals: list[External]) -> None:
    """On a shared engine a stack may only use the account's own existing objects (422 otherwise)."""
    target = target_scope(client)
    if target.scope_account is None:
        return
    for kind, key, name in externals:
        if kind == "networks" and name in ("host", "ingress", "bridge", "none"):
            continue  # the engine's own networks: the policy check decided about host
        try:
            found = getattr(client.api, f"inspect_{kind[:-1]}")(name)
        except docker.errors.NotFound:
            continue  # the CLI says it is missing
        labels = found.get("Labels") if kind in ("networks", "volumes") else (found.get("Spec") or {}).get("Labels")
        if not owns(target, labels):
            raise field_error(["compose", kind, key], f"external {kind[:-1]} {name!r} does not exist on the swarm")


def stack_services(client: Any, name: str) -> list[dict[str, Any]]:
    """The services labelled with the stack's name, every account's: callers check ownership."""
    return client.api.services(filters={"label": f"{STACK_LABEL}={name}"})


def owned_stack_services(client: Any, name: str) -> list[dict[str, Any]]:
    """The stack's services; 404 when another account's services carry its name (on a shared
    engine ``docker stack rm`` would remove them)."""
    services = stack_services(client, name)
    if any(not owns(target_scope(client), (s.get("Spec") or {}).get("Labels")) for s in services):
        raise refused_not_found("stack", name)
    return services


def check_manager(client: Any, name: str, images: dict[str, str], externals: list[External]) -> None:
    """Before ``docker stack deploy``: the name is not another account's stack on a shared engine
    (409: deploying over it would take its services), the external objects are the account's, and
    every image is on the manager."""
    scope = target_scope(client)
    if scope.scope_account is not None and any(
            not owns(scope, (s.get("Spec") or {}).get("Labels")) for s in stack_services(client, name)):
        raise EngineRefused("conflict", f"a stack named {name!r} exists on this shared engine and is "
                                        "not this account's: choose another name")
    check_externals(client, externals)
    require_images(client, images)


def require_images(client: Any, images: dict[str, str]) -> None:
    """Every image is on the manager already (422 naming the service otherwise): no registry is
    assumed reachable."""
    for service, image in images.items():
        try:
            client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            raise field_error(["compose", "services", service, "image"],
                              f"image {image!r} is not on the manager and no registry is assumed reachable: "
                              "load or build it on the swarm's nodes first") from None


# ---- the docker CLI --------------------------------------------------------------------------------------------


def _cli_env(target: HostTarget, private_dir: str) -> dict[str, str]:
    """The ``docker`` CLI's environment for the cluster: its endpoint and, for TLS, the PEMs in a
    private directory; nothing else of ours (no inherited DOCKER_* settings)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": private_dir, "DOCKER_CONFIG": private_dir,
           "DOCKER_HOST": target.endpoint}
    if target.uses_tls:
        for name, content in (("ca.pem", target.tls_ca), ("cert.pem", target.tls_cert), ("key.pem", target.tls_key)):
            if content:
                descriptor = os.open(os.path.join(private_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(content)
        env["DOCKER_CERT_PATH"] = private_dir
        env["DOCKER_TLS_VERIFY"] = "1" if target.tls_ca else ""
    return env


def run_cli(target: HostTarget, argv: list[str], compose: str | None = None) -> subprocess.CompletedProcess[str]:
    """``docker ARGV...`` against the cluster; ``{compose}`` in ``argv`` is the file written privately."""
    with tempfile.TemporaryDirectory(prefix="swarm-cli-") as private_dir:
        env = _cli_env(target, private_dir)
        if compose is not None:
            path = os.path.join(private_dir, "docker-compose.yml")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(compose)
            argv = [arg if arg != "{compose}" else path for arg in argv]
        return subprocess.run(["docker", *argv], env=env, cwd=private_dir, capture_output=True, text=True,
                              timeout=STACK_CLI_TIMEOUT_SECONDS, check=False)


def cli_message(done: subprocess.CompletedProcess[str], fallback: str) -> str:
    """The CLI's complaint on one line (its end, when long)."""
    return " ".join((done.stderr or done.stdout or fallback).split())[-2000:]


def remove_with_retries(target: HostTarget, name: str) -> subprocess.CompletedProcess[str]:
    """``docker stack rm``: it removes the services, then the networks; a network whose tasks are
    still stopping is "in use" for a moment (seen on a loaded machine), so try again shortly."""
    for attempt in range(3):
        done = run_cli(target, ["stack", "rm", name])
        if done.returncode == 0:
            break
        time.sleep(2 * (attempt + 1))
    return done


# ---- the rows ------------------------------------------------------------------------------------------------------


def stack_row(session: Session, account_id: int, cluster_id: int, name: str) -> SwarmStack | None:
    return session.scalar(select(SwarmStack).where(SwarmStack.cluster_id == cluster_id, SwarmStack.name == name,
                                                   SwarmStack.account_id == account_id))


def stack_rows(session: Session, account_id: int, cluster_id: int) -> list[SwarmStack]:
    """The stacks we deployed on the cluster, by name."""
    return list(session.scalars(select(SwarmStack).where(
        SwarmStack.cluster_id == cluster_id, SwarmStack.account_id == account_id).order_by(SwarmStack.name)))


def save_stack(session: Session, account_id: int, cluster_id: int, name: str, compose: str,
               services: list[str]) -> SwarmStack:
    """Remember a deployed stack (deploying it again updates the row)."""
    row = stack_row(session, account_id, cluster_id, name)
    if row is None:
        row = SwarmStack(account_id=account_id, cluster_id=cluster_id, name=name)
        session.add(row)
    row.compose, row.services, row.status = compose, services, "deployed"
    session.commit()
    return row


def forget_stack(session: Session, account_id: int, cluster_id: int, name: str) -> None:
    session.execute(delete(SwarmStack).where(SwarmStack.cluster_id == cluster_id, SwarmStack.name == name,
                                             SwarmStack.account_id == account_id))
    session.commit()
