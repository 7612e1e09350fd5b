"""The two-tenant matrix (issue 10): account B owns one of every kind of resource, made through the
API against the real engine, Temporal and a fake GitHub; account A, an admin of another account
holding its own valid token, then calls EVERY operation of the served ``/openapi.json`` that has
path parameters, filled with B's ids, names and slugs. Not one answer may be 2xx or 3xx (a leak),
none 5xx (a bug), and each must be the plain 404 another account's id gets (invariant 3), so a
request that stopped at body validation cannot pass for a refusal. A's lists never show B's
objects, and afterwards B's resources are all there, unchanged.

A new route fails ``test_the_walk_covers_every_operation_with_path_parameters`` until its
parameters are mapped to one of B's resources below, so the matrix cannot silently fall behind.

Also: B's ids inside request bodies on A's own objects, the run event stream, and one engine
registered by both accounts (A's own host/cluster naming B's containers, networks, volumes, images,
services, stacks, secrets and configs: issue 10 item 3).

Kinds made: pipeline, finished run (step ``a`` with logs), pipeline template + version (private,
published, installed by B), schedule, secret, git provider with an OAuth app + credential (fake
GitHub), synced repository with our webhook and one signed delivery, pipeline link, Docker host +
container + network + volume + built image, registry holding that image, swarm cluster + service +
stack + network + volume + secret + config, rollout (paused canary), container template, container
instance with a collected artifact, AI config, prompt template (two versions), integration template
(private), credential, instance and a finished execution (issue 14). Not made: a template rating (B may not rate its own template,
and a rating has no id in any path), an approval token and an OAuth state (capabilities held only
by their recipient, see EXCLUDED).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.webhooks.signatures import sign
from tests.adapters.git_providers.fakes import TOKEN, FakeGitHub
from tests.docker_support import IN_CI, busybox_image, docker_or_skip
from tests.harness import Account, Stack, wait_for, wait_run

# It makes swarm services and a rollout on the one node: never beside test_swarm's node drains.
pytestmark = pytest.mark.xdist_group("swarm")

PREFIX = "/api/v1/devops"
SOCKET = "unix:///var/run/docker.sock"
LABEL = "devops-test-matrix"
PAYLOADS = Path(__file__).parent.parent / "domain" / "webhooks" / "payloads"
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]

#: Operations walked with something other than B's resource, and why.
EXCLUDED = {
    # The provider's intake: no API token at all, the HMAC signature over the body with the
    # repository's own webhook secret is the credential. A's bearer token and an unsigned body
    # must not get in (walked; answered 401).
    "POST /webhooks/{provider}/{repository_id}": "authenticated by the repository's webhook signature",
    # The link in an approval notification: the token itself is the credential (single use,
    # one recipient, hashed at rest). Nobody but the recipient ever holds B's token, so A's
    # token plus a made-up approval token is walked instead (answered 404).
    "POST /approval_tokens/{token}/{decision}": "authenticated by the approval token in the path",
    "GET /approval_tokens/{token}": "the approval link's page: the token in the path is the credential",
    # An invitation link is the same: its token (single use, hashed at rest) is the credential,
    # held only by the invited person; a made-up one is walked instead (answered 404).
    "GET /invitations/{token}": "authenticated by the invitation token in the path",
    "POST /invitations/{token}/accept": "authenticated by the invitation token in the path",
}
#: The answer expected for A on these instead of 404.
EXPECTED = {"POST /webhooks/{provider}/{repository_id}": {401}}


@dataclass
class World:
    """B's resources (ids, names) and the A account that attacks them."""

    stack: Stack
    a: Account
    b: Account
    marker: str
    image: str
    ids: dict[str, Any] = field(default_factory=dict)


def ok(response: httpx.Response, *codes: int) -> dict[str, Any]:
    assert response.status_code in (codes or (200, 201)), (response.request.method, response.request.url,
                                                          response.status_code, response.text)
    return response.json() if response.content else {}


def doc(name: str, command: str = "echo matrix-log-line") -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "a", "type": "run_tests", "with": {"command": command}}]}


def _make_pipelines(w: World) -> None:
    c, m, ids = w.b.client, w.marker, w.ids
    ids["pipeline"] = ok(c.post("/pipelines", json=doc(f"b-pipe-{m}")))["id"]
    run = ok(c.post(f"/pipelines/{ids['pipeline']}/trigger", json={}))
    ids["run"] = run["id"]
    ids["secret"] = f"B_SECRET_{m.upper()}"
    ok(c.put("/secrets", json={"name": ids["secret"], "value": f"b-secret-value-{m}"}))
    template = ok(c.post("/pipeline_templates", json={
        "name": f"b-tpl-{m}", "is_public": False,
        "initial_version": {"version": "1.0.0", "document": doc(f"b-from-tpl-{m}")}}))
    ids["template"] = template["id"]
    ok(c.post(f"/pipeline_templates/{ids['template']}/publish", json=None))
    ids["installed"] = ok(c.post(f"/pipeline_templates/{ids['template']}/install", json=None))["id"]
    ids["schedule"] = ok(c.post("/schedules", json={"pipeline_id": ids["pipeline"], "cron": "0 3 * * *",
                                                     "description": f"b-sched-{m}"}))["id"]


def _make_git(w: World, github: FakeGitHub) -> None:
    c, m, ids = w.b.client, w.marker, w.ids
    provider = ok(c.post("/providers", json={
        "name": f"b-gh-{m}", "provider_type": "github", "base_url": github.base_url,
        "oauth_client_id": github.OAUTH_CLIENT_ID, "oauth_client_secret": github.OAUTH_CLIENT_SECRET}))
    ids["provider"] = provider["id"]
    ids["credential"] = ok(c.post(f"/providers/{provider['id']}/credentials",
                                  json={"name": f"b-bot-{m}", "token": TOKEN}))["id"]
    ok(c.post("/repositories/sync", json={"credential_id": ids["credential"]}))
    repos = {r["full_name"]: r for r in ok(c.get("/repositories"))["data"]}
    ids["repository"] = repos["acme/web"]["id"]
    ok(c.put(f"/repositories/{ids['repository']}/pipelines/{ids['pipeline']}"), 200, 201)
    hook = ok(c.post(f"/repositories/{ids['repository']}/webhook"))
    ids["webhook_secret"] = github.hooks("acme/web")[hook["id"]]["config"]["secret"]
    body = (PAYLOADS / "github_push.json").read_bytes()
    delivered = httpx.post(f"{w.stack.url}{PREFIX}/webhooks/github/{ids['repository']}", content=body, timeout=30,
                           headers={"Content-Type": "application/json", "X-GitHub-Event": "push",
                                    "X-GitHub-Delivery": f"b-delivery-{m}", **sign("github", body,
                                                                                  ids["webhook_secret"])})
    ok(delivered, 202)
    ids["event"] = delivered.json()["event_id"]


def _make_docker(w: World, engine) -> None:
    c, m, ids, labels = w.b.client, w.marker, w.ids, {LABEL: w.marker}
    ids["host"] = ok(c.post("/docker/hosts", json={"name": f"b-host-{m}", "endpoint": SOCKET,
                                                   "auto_sync": False}))["id"]
    host = f"/docker/hosts/{ids['host']}"
    container = ok(c.post(f"{host}/containers", json={"image": w.image, "command": SLEEPER, "name": f"b-ctr-{m}",
                                                      "labels": labels, "start": True}), 201)
    ids["container"] = container["container_id"]
    ids["network"] = ok(c.post(f"{host}/networks", json={"name": f"b-net-{m}", "labels": labels}))["id"]
    ids["volume"] = ok(c.post(f"{host}/volumes", json={"name": f"b-vol-{m}", "labels": labels}))["name"]
    ids["registry"] = ok(c.post("/docker/registries", json={"name": f"b-reg-{m}",
                                                            "url": "http://127.0.0.1:5000"}))["id"]
    # B's own image, built through the API (an engine-wide base image is nobody's to push)
    ids["image"] = f"devops-test/matrix-{m}:b"
    ok(c.post(f"{host}/images/build", params={"tag": ids["image"]}, headers={"Content-Type": "application/x-tar"},
              content=context_tar(f"FROM {w.image}\nLABEL {LABEL}={m}\n")), 200, 201)
    ids["registry_repo"] = f"devops-test/matrix-{m}"
    ok(c.post(f"{host}/images/push", json={"image": ids["image"], "registry_id": ids["registry"],
                                           "repository": ids["registry_repo"], "tag": "v1"}))


def context_tar(dockerfile: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    return buffer.getvalue()


def _make_swarm(w: World, engine, image_v2: str) -> None:
    c, m, ids, labels = w.b.client, w.marker, w.ids, {LABEL: w.marker}
    ids["cluster"] = ok(c.post("/swarm/clusters", json={"name": f"b-swarm-{m}", "endpoint": SOCKET,
                                                        "auto_sync": False}))["id"]
    base = f"/swarm/clusters/{ids['cluster']}"
    ids["node"] = engine.nodes.list()[0].id
    ids["service"] = f"b-svc-{m}"
    ok(c.post(f"{base}/services", json={"name": ids["service"], "image": w.image, "command": SLEEPER,
                                        "replicas": 1, "labels": labels}), 201)
    ids["stack"] = f"bst{m}"
    compose = (f"version: '3.8'\nservices:\n  web:\n    image: {w.image}\n    command: {json.dumps(SLEEPER)}\n"
               f"    deploy:\n      replicas: 1\n      labels:\n        {LABEL}: '{m}'\n")
    ok(c.post(f"{base}/stacks", json={"name": ids["stack"], "compose": compose}), 201)
    ids["swarm_network"] = ok(c.post(f"{base}/networks", json={"name": f"b-onet-{m}", "labels": labels}))["id"]
    ids["swarm_volume"] = ok(c.post(f"{base}/volumes", json={"name": f"b-svol-{m}", "labels": labels}))["name"]
    ids["swarm_secret"] = ok(c.post(f"{base}/secrets", json={"name": f"b-ssec-{m}", "data": "b-data",
                                                             "labels": labels}))["id"]
    ids["swarm_config"] = ok(c.post(f"{base}/configs", json={"name": f"b-scfg-{m}", "data": "b=1",
                                                             "labels": labels}))["id"]
    ids["deployment"] = ok(c.post("/swarm/deployments", json={
        "cluster_id": ids["cluster"], "service": ids["service"], "image": image_v2, "strategy": "canary",
        "steps": [{"set_weight": 50}, {"pause": {}}]}), 201)["id"]


def _make_containers(w: World) -> None:
    c, m, ids = w.b.client, w.marker, w.ids
    ids["container_template"] = ok(c.post("/container_templates", json={"name": f"b-ctpl-{m}",
                                                                        "image": w.image}))["id"]
    ids["instance"] = ok(c.post("/containers", json={
        "image": w.image, "command": ["sh", "-c", "mkdir -p /work/out && echo b-artifact > /work/out/r.txt"],
        "artifact_paths": ["/work/out"], "timeout_seconds": 60}), 201)["id"]


def _make_ai_and_integrations(w: World) -> None:
    c, m, ids = w.b.client, w.marker, w.ids
    ids["ai_config"] = ok(c.post("/ai_configs", json={"name": f"b-ai-{m}", "provider": "anthropic", "model": "m",
                                                      "api_key": f"b-model-key-{m}"}))["id"]
    ids["prompt_template"] = ok(c.post("/prompt_templates", json={"name": f"b-prompt-{m}",
                                                                  "body": "hi {{ x }}"}))["id"]
    ok(c.post(f"/prompt_templates/{ids['prompt_template']}/versions", json={"body": "hello {{ x }}"}))
    ids["integration_template"] = ok(c.post("/integration_templates", json={
        "name": f"b-itpl-{m}", "slug": f"b-itpl-{m}", "integration_type": "custom", "category": "testing",
        "is_public": False}))["id"]
    ids["integration_credential"] = ok(c.post("/integration_credentials", json={
        "name": f"b-icred-{m}", "fields": {"token": f"b-integration-token-{m}"}}))["id"]
    ids["integration_instance"] = ok(c.post("/integration_instances", json={
        "template_id": ids["integration_template"], "name": f"b-inst-{m}", "configuration": {"handler": "echo"},
        "credential_id": ids["integration_credential"]}))["id"]
    execution = ok(c.post(f"/integration_instances/{ids['integration_instance']}/execute", params={"wait": 30},
                          json={"inputs": {"b": m}}), 200, 201, 202)
    ids["integration_execution"] = execution["id"]


def _finish(w: World) -> None:
    """Wait for what runs in the background: the run, the container's artifact, the delivery."""
    c, ids = w.b.client, w.ids
    run = wait_run(c, ids["run"])
    assert run["status"] in ("success", "failure") and run["steps"], run  # finished, with a step row
    instance = wait_for(lambda: (lambda i: i if i["status"] in ("completed", "failed", "timeout") else None)(
        c.get(f"/containers/{ids['instance']}").json()), timeout=60, message="B's container instance done")
    assert instance["status"] == "completed" and instance["artifacts"], instance
    ids["artifact"] = instance["artifacts"][0]["id"]
    wait_for(lambda: c.get(f"/repositories/{ids['repository']}/webhook_events").json()["count"] >= 1,
             message="B's webhook delivery stored")
    # teams and access: B's other user (invited), a second token, an invitation, an audit event
    ids["token"] = ok(c.post("/tokens", json={"name": f"b-token-{w.marker}"}))["id"]
    ids["invitation"] = ok(c.post("/users", json={"email": f"invitee-{w.marker}@example.test", "role": "viewer"}))["id"]
    ids["user"] = w.b.user_id
    ids["audit_event"] = ok(c.get("/audit_events", params={"action": "secret.created"}))["data"][0]["id"]


def _cleanup(w: World, engine) -> None:
    c, ids = w.b.client, w.ids
    if "deployment" in ids:
        c.post(f"/swarm/deployments/{ids['deployment']}/abort")
    if "cluster" in ids:
        base = f"/swarm/clusters/{ids['cluster']}"
        c.delete(f"{base}/stacks/{ids.get('stack')}")
        c.delete(f"{base}/services/{ids.get('service')}")
    for service in engine.services.list():
        spec = service.attrs["Spec"]
        if w.marker in spec.get("Name", "") or (spec.get("Labels") or {}).get(LABEL) == w.marker:
            service.remove()
    selector = {"label": [f"{LABEL}={w.marker}"]}
    for container in engine.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for kind in (engine.secrets, engine.configs):
        for obj in kind.list(filters=selector):
            obj.remove()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # overlay networks and volumes go once their tasks are gone
        try:
            for network in engine.networks.list(filters=selector):
                network.remove()
            for volume in engine.volumes.list(filters=selector):
                volume.remove(force=True)
            break
        except Exception:  # noqa: BLE001 - still in use for a moment
            time.sleep(0.5)
    if "registry_repo" in ids:
        c.delete(f"/docker/registries/{ids['registry']}/repositories/{ids['registry_repo']}/tags/v1")
        for reference in (f"127.0.0.1:5000/{ids['registry_repo']}:v1", ids["image"]):
            try:
                engine.images.remove(reference, force=True)
            except Exception:  # noqa: BLE001 - not left behind
                pass
    for name in (ids.get("stack"),):
        if name:
            subprocess.run(["docker", "stack", "rm", name], capture_output=True, check=False)
    for key, path in (("host", "/docker/hosts/{}"), ("cluster", "/swarm/clusters/{}"),
                      ("schedule", "/schedules/{}")):
        if key in ids:
            c.delete(path.format(ids[key]))


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    server = FakeGitHub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(stack: Stack, github: FakeGitHub) -> Iterator[World]:
    engine = docker_or_skip()
    problem = None
    if (engine.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        problem = "the engine is not in a swarm (scripts/test-services.sh runs `docker swarm init`)"
    try:
        httpx.get("http://127.0.0.1:5000/v2/", timeout=5)
    except httpx.HTTPError as exc:
        problem = f"no registry answers at 127.0.0.1:5000 ({exc}); run scripts/test-services.sh"
    if problem:  # under CI every kind must be there: a skipped matrix is a failure
        pytest.fail(problem) if IN_CI else pytest.skip(problem)
    image = busybox_image(engine)
    image_v2 = busybox_image(engine, changes=["ENV DEVOPS_TEST_MATRIX=2"])
    w = World(stack=stack, a=stack.account(), b=stack.account(), marker=uuid.uuid4().hex[:10], image=image)
    try:
        _make_pipelines(w)
        _make_git(w, github)
        _make_docker(w, engine)
        _make_swarm(w, engine, image_v2)
        _make_containers(w)
        _make_ai_and_integrations(w)
        _finish(w)
        w.ids["a_registry"] = ok(w.a.client.post("/docker/registries", json={
            "name": "a-reg", "url": "http://127.0.0.1:5000"}))["id"]
        yield w
    finally:
        _cleanup(w, engine)
        engine.close()


# ---- the OpenAPI document -------------------------------------------------------------------------


def operations(stack: Stack) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path without the API prefix, operation) of the document the running API serves."""
    document = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path.removeprefix(PREFIX), operation))
    return found


def walk_order(found: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
    """DELETEs last: one that wrongly succeeded must not turn the later calls into honest 404s."""
    return sorted(found, key=lambda op: op[0] == "DELETE")


def path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def b_value(w: World, path: str, param: str) -> str:
    """B's value for ``param`` in ``path``: the kind is told by the name, or by the path around it."""
    ids = w.ids
    by_context = {
        ("template_id", "/pipeline_templates"): ids["template"],
        ("template_id", "/container_templates"): ids["container_template"],
        ("template_id", "/prompt_templates"): ids["prompt_template"],
        ("credential_id", "/integration_credentials"): ids["integration_credential"],
        ("instance_id", "/integration_instances"): ids["integration_instance"],
        ("name", "/secrets"): ids["secret"],
        ("name", "/docker/hosts/{host_id}/volumes"): ids["volume"],
        ("name", "/docker/registries"): ids["registry_repo"],
        ("name", "/swarm/clusters/{cluster_id}/services"): ids["service"],
        ("name", "/swarm/clusters/{cluster_id}/stacks"): ids["stack"],
        ("name", "/swarm/clusters/{cluster_id}/volumes"): ids["swarm_volume"],
        ("network_id", "/docker/hosts"): ids["network"],
        ("network_id", "/swarm/clusters"): ids["swarm_network"],
        ("object_id", "/swarm/clusters/{cluster_id}/secrets"): ids["swarm_secret"],
        ("object_id", "/swarm/clusters/{cluster_id}/configs"): ids["swarm_config"],
        ("event_id", "/audit_events"): ids["audit_event"],
        ("token", "/invitations"): "a-made-up-invitation-token",
    }
    for (name, prefix), value in by_context.items():
        if name == param and path.startswith(prefix):
            return str(value)
    by_name = {
        "pipeline_id": ids["pipeline"], "run_id": ids["run"], "step_id": "a", "decision": "approve",
        "version": "1.0.0", "token": "a-made-up-approval-token", "schedule_id": ids["schedule"],
        "provider_id": ids["provider"], "credential_id": ids["credential"], "repository_id": ids["repository"],
        "event_id": ids["event"], "provider": "github", "host_id": ids["host"], "container_id": ids["container"],
        "image": ids["image"], "registry_id": ids["registry"], "tag": "v1", "deployment_id": ids["deployment"],
        "cluster_id": ids["cluster"], "node_id": ids["node"], "instance_id": ids["instance"],
        "artifact_id": ids["artifact"], "user_id": ids["user"], "invitation_id": ids["invitation"],
        "token_id": ids["token"], "ai_config_id": ids["ai_config"],
        "integration_template_id": ids["integration_template"], "execution_id": ids["integration_execution"],
    }
    if param not in by_name:
        raise AssertionError(f"no resource of B is mapped to path parameter {param!r} of {path}: add it to b_value")
    return str(by_name[param])


def body_for(w: World, method: str, template: str) -> dict[str, Any] | None:
    """A body B itself could send, so the request passes validation and reaches the lookup."""
    image, ids = w.image, w.ids
    intruder = doc("intruder")
    bodies: dict[str, Any] = {
        "PUT /pipelines/{pipeline_id}": intruder,
        "PATCH /pipelines/{pipeline_id}": {"is_active": False},
        "POST /pipelines/{pipeline_id}/trigger": {},
        "PATCH /pipeline_templates/{template_id}": {"description": "stolen"},
        "POST /pipeline_templates/{template_id}/versions": {"version": "9.9.9", "document": intruder},
        "PUT /pipeline_templates/{template_id}/versions/{version}": {"document": intruder},
        "POST /pipeline_templates/{template_id}/rate": {"rating": 1, "review": "stolen"},
        "PATCH /schedules/{schedule_id}": {"is_active": False},
        "PATCH /providers/{provider_id}": {"name": "stolen"},
        "POST /providers/{provider_id}/credentials": {"name": "stolen", "token": "stolen-token"},
        "PATCH /repositories/{repository_id}": {"branch_filter_type": "none"},
        "PATCH /docker/hosts/{host_id}": {"auto_sync": True},
        "POST /docker/hosts/{host_id}/containers": {"image": image, "command": ["true"]},
        "POST /docker/hosts/{host_id}/images/pull": {"image": image},
        # A's own registry: B's would be refused as a body field before the host is looked up
        "POST /docker/hosts/{host_id}/images/push": {"image": image, "registry_id": ids["a_registry"],
                                                     "repository": "stolen/x"},
        "POST /docker/hosts/{host_id}/images/{image}/tag": {"repository": "stolen/x", "tag": "1"},
        "POST /docker/hosts/{host_id}/networks": {"name": "stolen-net"},
        "POST /docker/hosts/{host_id}/volumes": {"name": "stolen-vol"},
        "PATCH /docker/registries/{registry_id}": {"name": "stolen"},
        "POST /swarm/deployments/{deployment_id}/rollback": {"revision_number": 1},
        "PATCH /swarm/clusters/{cluster_id}": {"auto_sync": True},
        "PATCH /swarm/clusters/{cluster_id}/nodes/{node_id}": {"availability": "active"},
        "POST /swarm/clusters/{cluster_id}/services": {"name": "stolen-svc", "image": image},
        "PATCH /swarm/clusters/{cluster_id}/services/{name}": {"replicas": 0},
        "POST /swarm/clusters/{cluster_id}/services/{name}/scale": {"replicas": 0},
        "POST /swarm/clusters/{cluster_id}/stacks": {"name": "stolen",
                                                     "compose": f"services: {{a: {{image: '{image}'}}}}\n"},
        "POST /swarm/clusters/{cluster_id}/networks": {"name": "stolen-net"},
        "POST /swarm/clusters/{cluster_id}/volumes": {"name": "stolen-vol"},
        "POST /swarm/clusters/{cluster_id}/secrets": {"name": "stolen", "data": "x"},
        "POST /swarm/clusters/{cluster_id}/configs": {"name": "stolen", "data": "x"},
        "PATCH /container_templates/{template_id}": {"command": ["true"]},
        "PATCH /ai_configs/{ai_config_id}": {"model": "stolen"},
        "PATCH /prompt_templates/{template_id}": {"description": "stolen"},
        "POST /prompt_templates/{template_id}/versions": {"body": "stolen {{ x }}"},
        "POST /prompt_templates/{template_id}/render": {"variables": {"x": 1}},
        "PATCH /integration_templates/{integration_template_id}": {"description": "stolen"},
        "POST /integration_templates/{integration_template_id}/install": {"name": "stolen",
                                                                          "configuration": {"handler": "echo"}},
        "PATCH /integration_credentials/{credential_id}": {"fields": {"token": "stolen"}},
        "PATCH /integration_instances/{instance_id}": {"status": "paused"},
        "POST /integration_instances/{instance_id}/execute": {"inputs": {}},
    }
    key = f"{method} {template}"
    if key in bodies:
        return bodies[key]
    return {} if method in ("PUT", "PATCH") else None


def empty_tar() -> bytes:
    return b"\0" * 1024  # two zero blocks: a valid, empty tar archive


def call(w: World, client: httpx.Client, method: str, template: str, values: dict[str, str]) -> httpx.Response:
    """One request; streamed so an SSE answer (if it ever were 200) cannot hang the walk."""
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", httpx.URL(path="/" + value).raw_path.decode()[1:])
    if template.endswith("/images/build"):
        request = client.build_request(method, path, content=empty_tar(), params={"tag": "stolen/x:1"},
                                       headers={"Content-Type": "application/x-tar"})
    else:
        request = client.build_request(method, path, json=body_for(w, method, template))
    response = client.send(request, stream=True)
    try:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
    finally:
        response.close()
    return response


# ---- the walk -------------------------------------------------------------------------------------


def snapshot(w: World) -> dict[str, Any]:
    """B's resources as B sees them (the parts that only a change by someone could alter)."""
    c, ids = w.b.client, w.ids
    host, cluster = f"/docker/hosts/{ids['host']}", f"/swarm/clusters/{ids['cluster']}"

    def get(path: str, *keys: str) -> Any:
        response = c.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        body = response.json()
        return {k: body.get(k) for k in keys} if keys else body

    return {
        "pipeline": get(f"/pipelines/{ids['pipeline']}"),
        "installed": get(f"/pipelines/{ids['installed']}"),
        "pipelines": get("/pipelines", "count"),
        "run": get(f"/pipeline_runs/{ids['run']}", "id", "status", "pipeline_id", "run_number"),
        "runs": get("/pipeline_runs", "count"),
        "logs": c.get(f"/pipeline_runs/{ids['run']}/logs", params={"format": "text"}).text,
        "template": get(f"/pipeline_templates/{ids['template']}"),
        "version": get(f"/pipeline_templates/{ids['template']}/versions/1.0.0"),
        "schedule": get(f"/schedules/{ids['schedule']}", "id", "cron", "is_active", "pipeline_id", "description"),
        "secrets": get("/secrets"),
        "provider": get(f"/providers/{ids['provider']}"),
        "credentials": get(f"/providers/{ids['provider']}/credentials"),
        # minus the count of refused deliveries: the walk's unsigned delivery is one, rightly
        "repository": {k: v for k, v in get(f"/repositories/{ids['repository']}").items() if k != "webhook"},
        "webhook": {k: v for k, v in get(f"/repositories/{ids['repository']}")["webhook"].items()
                    if k != "rejected_deliveries"},
        "links": get(f"/repositories/{ids['repository']}/pipelines"),
        "event": get(f"/repositories/{ids['repository']}/webhook_events/{ids['event']}", "id", "delivery_id"),
        "host": get(host, "id", "name", "endpoint", "auto_sync"),
        "container": get(f"{host}/containers/{ids['container']}", "id", "name"),
        "network": get(f"{host}/networks/{ids['network']}", "id", "name"),
        "volume": get(f"{host}/volumes/{ids['volume']}", "name"),
        "registry": get(f"/docker/registries/{ids['registry']}"),
        "cluster": get(cluster, "id", "name", "endpoint", "auto_sync"),
        "service": get(f"{cluster}/services/{ids['service']}")["service"]["name"],
        "replicas": get(f"{cluster}/services/{ids['service']}")["service"]["replicas"],
        "stack": get(f"{cluster}/stacks/{ids['stack']}")["stack"]["name"],
        "swarm_secrets": sorted(s["id"] for s in get(f"{cluster}/secrets")["data"]),
        "swarm_configs": sorted(s["id"] for s in get(f"{cluster}/configs")["data"]),
        "deployment": get(f"/swarm/deployments/{ids['deployment']}", "id", "service", "strategy"),
        "container_template": get(f"/container_templates/{ids['container_template']}"),
        "instance": get(f"/containers/{ids['instance']}", "id", "status", "artifacts"),
        "users": get("/users"),
        "tokens": [{k: v for k, v in t.items() if k != "last_used_at"} for t in get("/tokens")["data"]],
        "invitations": get("/invitations"),
        "ai_config": get(f"/ai_configs/{ids['ai_config']}"),
        "prompt_template": get(f"/prompt_templates/{ids['prompt_template']}"),
        "prompt_versions": get(f"/prompt_templates/{ids['prompt_template']}/versions"),
        "integration_template": {k: v for k, v in get(f"/integration_templates/{ids['integration_template']}").items()
                                 if k != "usage_count"},
        "integration_credential": get(f"/integration_credentials/{ids['integration_credential']}"),
        "integration_instance": get(f"/integration_instances/{ids['integration_instance']}"),
        "integration_executions": get("/integration_executions", "count"),
    }


def assert_unchanged(world: World, before: dict[str, Any]) -> None:
    after = snapshot(world)
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, f"B's resources changed: {changed}"


def test_another_accounts_ids_answer_404_on_every_operation_and_change_nothing(world: World):
    before = snapshot(world)
    walked, problems, answers = [], [], {}
    for method, template, _operation in walk_order(operations(world.stack)):
        params = path_params(template)
        if not params:
            continue
        values = {name: b_value(world, template, name) for name in params}
        response = call(world, world.a.client, method, template, values)
        key = f"{method} {template}"
        walked.append(key)
        answers[key] = response.status_code
        expected = EXPECTED.get(key, {404})
        if response.status_code not in expected:
            kind = ("LEAK" if response.status_code < 400 else "5xx" if response.status_code >= 500 else "not 404")
            problems.append(f"{kind}: {key} -> {response.status_code} {response.text[:300]!r}")
        elif world.marker in response.text:
            problems.append(f"LEAK in the refusal: {key} names B's object: {response.text[:300]!r}")
    assert len(walked) >= 100, walked  # the document really was walked
    assert not problems, f"{len(problems)} of {len(walked)} operations:\n" + "\n".join(problems)
    assert_unchanged(world, before)


def test_the_walk_covers_every_operation_with_path_parameters(world: World):
    """Every operation with path parameters is mapped to B's resources (b_value raises when a new
    one is not), and the exclusions name operations that exist."""
    templates = set()
    for method, template, _operation in operations(world.stack):
        for name in path_params(template):
            b_value(world, template, name)
        if path_params(template):
            templates.add(f"{method} {template}")
    assert set(EXCLUDED) <= templates and set(EXPECTED) <= templates


def test_the_same_reads_succeed_for_the_owner(world: World):
    """The walk's values are real: with B's own token every read of the walk answers 2xx, so A's
    404s come from the account check and a leak would show as a 2xx."""
    failures = []
    for method, template, _operation in operations(world.stack):
        if method != "GET" or not path_params(template) or f"{method} {template}" in EXCLUDED:
            continue
        values = {name: b_value(world, template, name) for name in path_params(template)}
        response = call(world, world.b.client, method, template, values)
        if not 200 <= response.status_code < 400:  # the OAuth start answers 302 to the provider
            failures.append(f"{template} -> {response.status_code} {response.text[:200]!r}")
    assert not failures, "\n".join(failures)


def test_the_webhook_intake_and_approval_links_need_their_own_credential(world: World):
    """The operations authenticated by something other than the API token: A's token is no
    substitute for B's webhook signature, and a signature made with another secret is refused;
    an approval token or OAuth state that was never issued decides nothing."""
    ids, body = world.ids, (PAYLOADS / "github_push.json").read_bytes()
    url = f"{world.stack.url}{PREFIX}/webhooks/github/{ids['repository']}"
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
    for extra in ({"Authorization": f"Bearer {world.a.token}"}, sign("github", body, "a-secret-of-account-a")):
        response = httpx.post(url, content=body, headers={**headers, **extra,
                                                          "X-GitHub-Delivery": uuid.uuid4().hex}, timeout=30)
        assert response.status_code == 401, response.text
    events = world.b.client.get(f"/repositories/{ids['repository']}/webhook_events").json()
    assert events["count"] == 1  # only B's own, signed delivery was stored
    token = world.a.client.post("/approval_tokens/a-made-up-approval-token/approve", json=None)
    assert token.status_code == 404, token.text
    # the OAuth callback is the same: its one-time state (only in B's browser) is the credential
    callback = world.a.client.get("/providers/oauth/callback", params={"state": "a-made-up-state", "code": "x"})
    assert callback.status_code == 400, callback.text


# ---- lists ----------------------------------------------------------------------------------------

#: List operations' query parameters that take an id: A asks for B's.
QUERY_IDS = {"pipeline_id": "pipeline", "cluster_id": "cluster", "provider_id": "provider",
             "repository_id": "repository", "host_id": "host", "credential_id": "credential",
             "template_id": "template", "schedule_id": "schedule", "run_id": "run",
             "instance_id": "integration_instance", "ai_config_id": "ai_config"}
#: GETs without path parameters that are not lists of account objects.
#: The ids of B's that each list must not hold (every list is also searched for B's names).
LIST_KINDS = {"/pipelines": ("pipeline", "installed"), "/pipeline_runs": ("run",),
              "/pipeline_templates": ("template",), "/pipeline_templates/marketplace": ("template",),
              "/schedules": ("schedule",), "/providers": ("provider",), "/repositories": ("repository",),
              "/docker/hosts": ("host",), "/docker/registries": ("registry",), "/swarm/clusters": ("cluster",),
              "/swarm/deployments": ("deployment",), "/container_templates": ("container_template",),
              "/containers": ("instance",), "/users": ("user",), "/tokens": ("token",),
              "/invitations": ("invitation",), "/audit_events": ("audit_event",),
              "/ai_configs": ("ai_config",), "/prompt_templates": ("prompt_template",),
              "/integration_templates": ("integration_template",),
              "/integration_credentials": ("integration_credential",),
              "/integration_instances": ("integration_instance",),
              "/integration_executions": ("integration_execution",)}
NOT_LISTS = {"/users/me", "/container_policy", "/container_quotas", "/pipeline_runs/stream",
             "/providers/oauth/callback"}


def test_lists_never_show_another_accounts_objects(world: World):
    ids = world.ids
    seen, problems = [], []
    for method, template, operation in operations(world.stack):
        if method != "GET" or path_params(template) or template in NOT_LISTS or not template.startswith("/"):
            continue
        if template == "/health" or template.startswith("/openapi") or template.startswith("/docs"):
            continue
        query_params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        asked = {name: world.ids[kind] for name, kind in QUERY_IDS.items() if name in query_params}
        for params in ({}, asked) if asked else ({},):
            response = world.a.client.get(template, params=params)
            seen.append((template, params))
            if response.status_code >= 500 or response.status_code < 200:
                problems.append(f"{template} {params}: {response.status_code} {response.text[:200]}")
                continue
            if world.marker in response.text or f"B_SECRET_{world.marker.upper()}" in response.text:
                problems.append(f"{template} {params}: shows B's objects: {response.text[:300]}")
            owned = {ids[key] for key in LIST_KINDS.get(template, ())}
            if response.status_code == 200 and owned:
                data = response.json().get("data") if isinstance(response.json(), dict) else response.json()
                shown = {item.get("id") for item in data or [] if isinstance(item, dict)}
                if shown & owned:
                    problems.append(f"{template} {params}: lists B's ids {sorted(shown & owned)}")
    assert set(LIST_KINDS) <= {template for template, _params in seen}, seen
    assert not problems, "\n".join(problems)


def test_the_run_event_stream_never_carries_another_accounts_runs(world: World):
    """The account-wide SSE stream, replayed from the start: none of B's run events reach A."""
    client = world.a.client
    with client.stream("GET", "/pipeline_runs/stream", headers={"Last-Event-ID": "0"},
                       timeout=httpx.Timeout(5, read=2)) as response:
        assert response.status_code == 200
        received = ""
        try:
            for chunk in response.iter_text():
                received += chunk
                if len(received) > 100_000:
                    break
        except httpx.ReadTimeout:
            pass
    for line in received.splitlines():
        if line.startswith("data:"):
            payload = json.loads(line[5:])
            assert payload.get("run_id") != world.ids["run"], line
            assert payload.get("pipeline_id") != world.ids["pipeline"], line


# ---- B's ids inside a request body ----------------------------------------------------------------


def test_another_accounts_ids_in_a_body_are_refused_and_change_nothing(world: World):
    """Every body field that names an object (``*_id``), on the caller's own objects: B's id is
    refused (404, or 422 naming the field) as if it did not exist, and nothing is made."""
    c = world.stack.account()  # an account with objects of its own to hang B's ids on
    ids, image = world.ids, world.image
    own_pipeline = ok(c.client.post("/pipelines", json=doc("c-pipe")))["id"]
    own_schedule = ok(c.client.post("/schedules", json={"pipeline_id": own_pipeline, "cron": "0 3 * * *"}))["id"]
    own_provider = ok(c.client.post("/providers", json={"name": "c-gh", "provider_type": "github"}))["id"]
    own_repository = ok(c.client.post("/repositories", json={"provider_id": own_provider,
                                                               "full_name": "c/own"}))["id"]
    own_host = ok(c.client.post("/docker/hosts", json={"name": "c-host", "endpoint": SOCKET,
                                                       "auto_sync": False}))["id"]
    own_integration = ok(c.client.post("/integration_templates", json={
        "name": "c-itpl", "slug": "c-itpl", "integration_type": "custom", "category": "testing"}))["id"]
    before = snapshot(world)
    problems = []
    try:
        for method, path, body in [
            ("POST", "/schedules", {"pipeline_id": ids["pipeline"], "cron": "0 3 * * *"}),
            ("PATCH", f"/schedules/{own_schedule}", {"pipeline_id": ids["pipeline"]}),
            ("POST", f"/providers/{own_provider}/test", {"credential_id": ids["credential"]}),
            ("POST", "/repositories", {"provider_id": ids["provider"], "full_name": "c/stolen"}),
            ("POST", "/repositories", {"provider_id": own_provider, "credential_id": ids["credential"],
                                       "full_name": "c/stolen"}),
            ("POST", "/repositories/sync", {"credential_id": ids["credential"]}),
            ("PATCH", f"/repositories/{own_repository}", {"credential_id": ids["credential"]}),
            ("PUT", f"/repositories/{own_repository}/pipelines/{ids['pipeline']}", None),
            ("DELETE", f"/repositories/{own_repository}/pipelines/{ids['pipeline']}", None),
            ("POST", f"/docker/hosts/{own_host}/images/pull", {"image": image, "registry_id": ids["registry"]}),
            ("POST", f"/docker/hosts/{own_host}/images/push", {"image": image, "registry_id": ids["registry"],
                                                               "repository": "stolen/x"}),
            ("POST", "/swarm/deployments", {"cluster_id": ids["cluster"], "service": ids["service"],
                                            "image": image, "strategy": "rolling"}),
            ("POST", "/containers", {"template_id": ids["container_template"], "command": ["true"]}),
            ("POST", "/integration_instances", {"template_id": ids["integration_template"], "name": "c-stolen",
                                                "configuration": {"handler": "echo"}}),
            ("POST", "/integration_instances", {"template_id": own_integration, "name": "c-stolen",
                                                "configuration": {"handler": "echo"},
                                                "credential_id": ids["integration_credential"]}),
            ("POST", f"/integration_templates/{own_integration}/install",
             {"name": "c-stolen", "configuration": {"handler": "echo"}, "credential_id": ids["integration_credential"]}),
            ("POST", "/missions/trigger", {"pipeline_id": ids["pipeline"], "mission_id": "c-stolen"}),
        ]:
            response = c.client.request(method, path, json=body)
            if response.status_code not in (404, 422):
                problems.append(f"{method} {path} {body} -> {response.status_code} {response.text[:200]!r}")
            elif world.marker in response.text:
                problems.append(f"{method} {path}: the refusal names B's object: {response.text[:200]!r}")
        assert c.client.get("/schedules").json()["count"] == 1
        assert c.client.get("/repositories").json()["count"] == 1
        assert c.client.get("/containers").json()["count"] == 0
        assert c.client.get("/swarm/deployments").json()["count"] == 0
        assert c.client.get("/integration_instances").json()["count"] == 0
        assert c.client.get("/pipeline_runs").json()["count"] == 0
    finally:
        c.client.delete(f"/docker/hosts/{own_host}")
    assert not problems, "\n".join(problems)
    assert_unchanged(world, before)


# ---- one engine, two accounts ---------------------------------------------------------------------

#: Operations on objects inside an engine, walked through A's OWN registration of the engine B
#: uses (issue 10 item 3): a shared engine must still hide B's containers, networks, volumes,
#: images it built, services, stacks, secrets and configs. Nodes are the engine's, not an account's.
SHARED = re.compile(r"^/(docker/hosts/{host_id}/(containers|networks|volumes|images)|"
                    r"swarm/clusters/{cluster_id}/(services|stacks|networks|volumes|secrets|configs))/{\w+}")


def test_a_shared_engine_hides_another_accounts_objects_behind_ones_own_host(world: World):
    a = world.stack.account()  # a fresh attacker: its own host and cluster on B's engine
    host = ok(a.client.post("/docker/hosts", json={"name": "a-host", "endpoint": SOCKET, "auto_sync": False}))["id"]
    cluster = ok(a.client.post("/swarm/clusters", json={"name": "a-swarm", "endpoint": SOCKET,
                                                        "auto_sync": False}))["id"]
    before = snapshot(world)
    problems, walked = [], 0
    try:
        # A's inventory of its own host and cluster, live and after a sync, holds none of B's objects
        for path in (f"/docker/hosts/{host}/sync", f"/swarm/clusters/{cluster}/sync"):
            synced = a.client.post(path)
            if synced.status_code != 200:
                problems.append(f"POST {path} -> {synced.status_code} {synced.text[:200]!r}")
        for path in (f"/docker/hosts/{host}/containers?live=true", f"/docker/hosts/{host}/containers",
                     f"/docker/hosts/{host}/events?limit=1000", f"/swarm/clusters/{cluster}/events?limit=1000",
                     f"/swarm/clusters/{cluster}/services", f"/swarm/clusters/{cluster}/services?live=true",
                     f"/docker/hosts/{host}/networks", f"/docker/hosts/{host}/volumes",
                     f"/docker/hosts/{host}/images", f"/swarm/clusters/{cluster}/stacks", f"/swarm/clusters/{cluster}/networks",
                     f"/swarm/clusters/{cluster}/volumes", f"/swarm/clusters/{cluster}/secrets",
                     f"/swarm/clusters/{cluster}/configs"):
            response = a.client.get(path)
            if response.status_code != 200 or world.marker in response.text:
                problems.append(f"GET {path} -> {response.status_code}: "
                                f"{'shows B objects' if world.marker in response.text else response.text[:200]}")
        # then every operation on one of B's objects, named through A's own registration
        for method, template, _operation in walk_order(operations(world.stack)):
            if not SHARED.match(template):
                continue
            values = {name: b_value(world, template, name) for name in path_params(template)}
            values.update({"host_id": str(host), "cluster_id": str(cluster)})
            response = call(world, a.client, method, template, values)
            walked += 1
            if response.status_code != 404:
                problems.append(f"{method} {template} -> {response.status_code} {response.text[:200]!r}")
    finally:
        a.client.delete(f"/docker/hosts/{host}")
        a.client.delete(f"/swarm/clusters/{cluster}")
    assert walked >= 20
    assert not problems, f"{len(problems)} answers through A's own registration of the engine:\n" + \
        "\n".join(problems)
    assert_unchanged(world, before)
