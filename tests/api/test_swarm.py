"""Swarm clusters and resources against the real single-node swarm: cluster CRUD and validation,
the test connection (a manager, an unreachable endpoint, an engine that is not a manager), the
SwarmSyncWorkflow (started on create, stopped on delete, an unchanged round writes nothing), nodes
(inspect, labels, drain and back, the only manager never removed), services (create, scale, update,
Swarm's rollback, logs, tasks, remove), stacks from compose files (and their 422s), networks,
volumes, secrets and configs, every change recorded as a SwarmEvent, accounts isolated and viewers
read-only. Everything made here carries the label ``devops-test-swarm=<uuid>`` and is removed."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select, update

from api.swarm_schemas import ServiceCreate
from db.models import SwarmCluster, SwarmDeployment, SwarmEvent, SwarmNode, SwarmService, User
from domain.errors import Invalid
from services.swarm_stacks import validate_compose
from tests.docker_support import busybox_image, docker_or_skip
from workflows.swarm_sync import SwarmSyncWorkflow

# Swarm-wide changes (a node drained for a moment) must not overlap the rollout tests:
# one xdist worker runs every test of this group, in order.
pytestmark = pytest.mark.xdist_group("swarm")

SOCKET = "unix:///var/run/docker.sock"
LABEL = "devops-test-swarm"
# Exits at once on SIGTERM (as PID 1 a plain `sleep` would wait for the 10 s kill).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; echo hello-from-$HOSTNAME; sleep 3600 & wait"]
TIMEOUT = 60


@pytest.fixture(scope="module")
def engine():
    client = docker_or_skip()
    if (client.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        pytest.skip("this engine is not in a swarm (scripts/test-services.sh runs `docker swarm init`)")
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(engine) -> str:
    return busybox_image(engine)


@pytest.fixture(scope="module")
def image_v2(engine) -> str:
    return busybox_image(engine, changes=["ENV DEVOPS_TEST_REVISION=2"])


@pytest.fixture
def label(engine) -> Iterator[str]:
    """A value unique to the test; everything made with ``devops-test-swarm=<value>`` is removed,
    and so are the stacks named in ``stacks`` (appended to by the test)."""
    value = uuid.uuid4().hex[:10]
    yield value
    selector = {"label": [f"{LABEL}={value}"]}
    for stack_name in [s.attrs["Spec"]["Labels"].get("com.docker.stack.namespace")
                       for s in engine.services.list(filters=selector)]:
        if stack_name:
            subprocess.run(["docker", "stack", "rm", stack_name], capture_output=True, check=False)
    for service in engine.services.list(filters=selector):
        service.remove()
    for secret in engine.secrets.list(filters=selector):
        secret.remove()
    for config in engine.configs.list(filters=selector):
        config.remove()
    for volume in engine.volumes.list(filters=selector):
        volume.remove(force=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # networks go once their tasks are gone
        try:
            for network in engine.networks.list(filters=selector):
                network.remove()
            break
        except Exception:  # noqa: BLE001 - still in use for a moment
            time.sleep(0.5)
    node = engine.nodes.list()[0]
    spec = node.attrs["Spec"]
    if spec.get("Availability") != "active" or LABEL in (spec.get("Labels") or {}):
        node.reload()
        labels = {k: v for k, v in (node.attrs["Spec"].get("Labels") or {}).items() if k != LABEL}
        node.update({**node.attrs["Spec"], "Availability": "active", "Labels": labels})


def make_cluster(client, **overrides) -> dict:
    body = {"name": f"swarm-{uuid.uuid4().hex[:8]}", "endpoint": SOCKET, "auto_sync": False, **overrides}
    response = client.post("/swarm/clusters", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def wait_until(predicate, timeout: float = TIMEOUT, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {message}")


def wait_running(client, base: str, name: str, replicas: int, image: str | None = None) -> dict:
    """The service's detail once exactly ``replicas`` tasks run (of ``image`` when given). A
    rolling update on a loaded machine (vfs storage, two test workers) can take over a minute."""
    last: dict = {}

    def ready():
        detail = client.get(f"{base}/services/{name}").json()
        last["detail"] = detail
        running = [t for t in detail["tasks"] if t["state"] == "running" and t["desired_state"] == "running"]
        if len(running) == replicas and (image is None or all(t["image"].startswith(image) for t in running)):
            return detail
        return None

    try:
        return wait_until(ready, timeout=TIMEOUT * (2 if image else 1), message=f"{replicas} running task(s) of {name}")
    except AssertionError as exc:
        detail = last.get("detail") or {}
        seen = [(t.get("state"), t.get("desired_state"), t.get("image"), t.get("error")) for t in detail.get("tasks", [])]
        raise AssertionError(f"{exc}; update status {detail.get('service', {}).get('update_status')}; tasks {seen}") from None


def events(client, cluster_id: int, **params) -> list[dict]:
    return client.get(f"/swarm/clusters/{cluster_id}/events", params={"limit": 1000, **params}).json()["data"]


def describe(stack, workflow_id: str):
    return stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).describe())


class _NotASwarmEngine(BaseHTTPRequestHandler):
    """Just enough of the Engine API for a client to connect: an engine outside any swarm."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.endswith("/_ping"):
            body, kind = b"OK", "text/plain"
        elif self.path.endswith("/version"):
            body, kind = json.dumps({"ApiVersion": "1.41", "Version": "20.10.0"}).encode(), "application/json"
        elif self.path.endswith("/info"):
            body = json.dumps({"ServerVersion": "20.10.0", "Swarm": {"LocalNodeState": "inactive"}}).encode()
            kind = "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def not_a_manager() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotASwarmEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---- clusters ---------------------------------------------------------------------------------------


def test_cluster_crud_validation_and_test_connection(stack, engine, tmp_path, not_a_manager, monkeypatch):
    client = stack.account().client
    cluster = make_cluster(client, environment="staging", sync_interval_seconds=120,
                           tls_ca="-----BEGIN CERTIFICATE-----")
    assert cluster["status"] == "pending" and cluster["tls_configured"] is True and "tls_ca" not in cluster
    with stack.sessions() as session:
        row = session.get(SwarmCluster, cluster["id"])
        assert row.encrypted_tls_ca and b"BEGIN" not in row.encrypted_tls_ca
    for override, field in [({"sync_interval_seconds": 29}, "sync_interval_seconds"),
                            ({"sync_interval_seconds": 3601}, "sync_interval_seconds"),
                            ({"endpoint": "http://127.0.0.1:2375"}, "endpoint"),
                            ({"endpoint": "unix:///nonexistent/docker.sock"}, "endpoint"),
                            ({"environment": "qa"}, "environment"), ({"tls_cert": "x"}, "tls_key")]:
        response = client.post("/swarm/clusters", json={"name": "bad", "endpoint": SOCKET, **override})
        assert response.status_code == 422, (override, response.text)
        assert field in response.json()["detail"][0]["loc"], (override, response.text)
    assert client.patch(f"/swarm/clusters/{cluster['id']}", json={"sync_interval_seconds": 10}).status_code == 422
    assert client.post("/swarm/clusters", json={"name": cluster["name"], "endpoint": SOCKET}).status_code == 409
    updated = client.patch(f"/swarm/clusters/{cluster['id']}", json={"environment": "production", "tls_ca": None})
    assert updated.status_code == 200 and updated.json()["tls_configured"] is False, updated.text

    tested = client.post(f"/swarm/clusters/{cluster['id']}/test")
    assert tested.status_code == 200, tested.text
    swarm = engine.swarm.attrs
    assert tested.json()["ok"] is True and tested.json()["is_manager"] is True
    assert tested.json()["swarm_id"] == swarm["ID"] and tested.json()["managers"] >= 1
    assert client.get(f"/swarm/clusters/{cluster['id']}").json()["swarm_id"] == swarm["ID"]

    # a loopback endpoint is a local engine: it needs the operator's allowlist
    monkeypatch.setattr(stack.settings, "engine_allowlist",
                        [*stack.settings.engine_allowlist, "tcp://127.0.0.1:1", not_a_manager])
    dead = make_cluster(client, endpoint="tcp://127.0.0.1:1")
    failed = client.post(f"/swarm/clusters/{dead['id']}/test")
    assert failed.status_code == 200 and failed.json()["ok"] is False
    assert "cannot be reached" in failed.json()["error"]
    lonely = make_cluster(client, endpoint=not_a_manager)
    refused = client.post(f"/swarm/clusters/{lonely['id']}/test")
    assert refused.status_code == 409 and "not a swarm manager" in refused.json()["detail"], refused.text
    recorded = [(e["cluster_id"], e["result"]) for cid in (cluster["id"], dead["id"], lonely["id"])
                for e in events(client, cid, source="api", type="cluster")]
    assert recorded == [(cluster["id"], "success"), (dead["id"], "failure"), (lonely["id"], "failure")]

    assert client.get("/swarm/clusters").json()["count"] == 3
    with stack.sessions.begin() as session:  # a rollout in progress keeps its cluster
        rollout = SwarmDeployment(account_id=session.get(SwarmCluster, cluster["id"]).account_id,
                                  cluster_id=cluster["id"], service_name="web", strategy="canary",
                                  status="paused")
        session.add(rollout)
    assert client.delete(f"/swarm/clusters/{cluster['id']}").status_code == 409
    with stack.sessions.begin() as session:
        session.execute(update(SwarmDeployment).where(SwarmDeployment.cluster_id == cluster["id"])
                        .values(status="completed"))
    assert client.delete(f"/swarm/clusters/{cluster['id']}").status_code == 204
    assert client.get(f"/swarm/clusters/{cluster['id']}").status_code == 404


def test_sync_workflow_lifecycle_and_an_unchanged_round_writes_nothing(stack, engine):
    client = stack.account().client
    cluster = make_cluster(client, auto_sync=True, sync_interval_seconds=3600)
    workflow_id = f"swarm-sync-{cluster['id']}"
    assert cluster["workflow_id"] == workflow_id
    assert describe(stack, workflow_id).status.name == "RUNNING"
    shown = wait_until(lambda: (c := client.get(f"/swarm/clusters/{cluster['id']}").json())["status"] == "connected"
                       and c, message="the first round")
    assert shown["swarm_id"] == engine.swarm.attrs["ID"] and shown["nodes"] >= 1
    assert shown["metrics"]["managers"] >= 1
    nodes = client.get(f"/swarm/clusters/{cluster['id']}/nodes").json()
    assert nodes["live"] is False and any(n["role"] == "manager" for n in nodes["data"])

    # Nothing changed: no row written (other tests may share the swarm: retry a few rounds).
    quiet = None
    for _ in range(6):
        round_ = client.post(f"/swarm/clusters/{cluster['id']}/sync").json()
        assert round_["status"] == "completed" and round_["ok"] is True, round_
        if round_["rows_written"] == 0:
            quiet = round_
            break
        time.sleep(0.5)
    assert quiet is not None, "every round wrote rows"
    assert quiet["nodes"]["created"] == quiet["nodes"]["updated"] == quiet["nodes"]["deleted"] == 0
    assert quiet["events"] == 0 and quiet["nodes"]["unchanged"] >= 1

    state = stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).query(SwarmSyncWorkflow.state))
    assert state.interval_seconds == 3600 and state.total_rounds >= 2
    assert client.patch(f"/swarm/clusters/{cluster['id']}", json={"auto_sync": False}).status_code == 200
    wait_until(lambda: describe(stack, workflow_id).status.name == "TERMINATED")
    one = client.post(f"/swarm/clusters/{cluster['id']}/sync").json()  # a one-round workflow
    assert one["status"] == "completed" and one["ok"] is True
    assert client.patch(f"/swarm/clusters/{cluster['id']}", json={"auto_sync": True}).status_code == 200
    wait_until(lambda: describe(stack, workflow_id).status.name == "RUNNING")
    assert client.delete(f"/swarm/clusters/{cluster['id']}").status_code == 204
    assert describe(stack, workflow_id).status.name == "TERMINATED"
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SwarmNode)
                              .where(SwarmNode.cluster_id == cluster["id"])) == 0


def test_unreachable_manager_reaches_error_after_5_rounds(stack, monkeypatch):
    client = stack.account().client
    # a loopback endpoint is a local engine: it needs the operator's allowlist
    monkeypatch.setattr(stack.settings, "engine_allowlist", [*stack.settings.engine_allowlist, "tcp://127.0.0.1:1"])
    cluster = make_cluster(client, endpoint="tcp://127.0.0.1:1")
    for failures in range(1, 6):
        round_ = client.post(f"/swarm/clusters/{cluster['id']}/sync").json()
        assert round_["ok"] is False and round_["consecutive_failures"] == failures
        assert round_["cluster_status"] == ("error" if failures >= 5 else "disconnected")
    assert client.get(f"/swarm/clusters/{cluster['id']}").json()["status"] == "error"
    assert client.get(f"/swarm/clusters/{cluster['id']}/services?live=true").status_code == 502


# ---- nodes ------------------------------------------------------------------------------------------


def test_nodes_inspect_label_drain_and_the_only_manager_is_never_removed(stack, engine, label, monkeypatch):
    client = stack.account().client
    cluster = make_cluster(client)
    base = f"/swarm/clusters/{cluster['id']}"
    listed = client.get(f"{base}/nodes", params={"live": "true"}).json()
    assert listed["live"] is True and listed["count"] == len(engine.nodes.list())
    node = next(n for n in listed["data"] if n["role"] == "manager")
    inspected = client.get(f"{base}/nodes/{node['node_id']}").json()
    assert inspected["ID"] == node["node_id"] and inspected["Spec"]["Role"] == "manager"
    assert client.get(f"{base}/nodes/nope").status_code == 404

    labels = {**node["labels"], LABEL: label}
    # the local engine is shared: its nodes are the operator's, changed by accounts only in development
    refused = client.patch(f"{base}/nodes/{node['node_id']}", json={"labels": labels})
    assert refused.status_code == 403 and "operator" in refused.json()["detail"], refused.text
    monkeypatch.setattr(stack.settings, "environment", "development")
    labelled = client.patch(f"{base}/nodes/{node['node_id']}", json={"labels": labels})
    assert labelled.status_code == 200 and labelled.json()["labels"][LABEL] == label, labelled.text
    try:
        drained = client.patch(f"{base}/nodes/{node['node_id']}", json={"availability": "drain"})
        assert drained.status_code == 200 and drained.json()["availability"] == "drain", drained.text
    finally:
        restored = client.patch(f"{base}/nodes/{node['node_id']}", json={"availability": "active"})
    assert restored.status_code == 200 and restored.json()["availability"] == "active"
    assert engine.nodes.get(node["node_id"]).attrs["Spec"]["Availability"] == "active"
    assert client.patch(f"{base}/nodes/{node['node_id']}", json={"availability": "gone"}).status_code == 422
    unlabelled = client.patch(f"{base}/nodes/{node['node_id']}",
                              json={"labels": {k: v for k, v in labels.items() if k != LABEL}})
    assert LABEL not in unlabelled.json()["labels"]

    refused = client.delete(f"{base}/nodes/{node['node_id']}", params={"force": "true"})
    assert refused.status_code == 409 and "only manager" in refused.json()["detail"], refused.text
    assert engine.nodes.get(node["node_id"]).attrs["Spec"]["Role"] == "manager"
    recorded = [(e["action"], e["result"]) for e in events(client, cluster["id"], source="api", type="node")]
    assert recorded[0] == ("remove", "failure") and recorded.count(("update", "success")) == 4
    assert recorded.count(("update", "failure")) == 1  # the refusal outside development


# ---- services -----------------------------------------------------------------------------------------


def test_service_create_scale_update_rollback_logs_and_remove(stack, engine, image, image_v2, label):
    client = stack.account().client
    cluster = make_cluster(client)
    base = f"/swarm/clusters/{cluster['id']}"
    name = f"svc-{label}"
    body = {"name": name, "image": image, "command": SLEEPER, "replicas": 1, "env": {"TOKEN": "hush-" + label},
            "labels": {LABEL: label},
            "update_config": {"parallelism": 1, "delay": 0, "order": "start-first", "failure_action": "pause",
                              "monitor": 1}}
    for override, loc in [({"name": "bad name"}, ["body", "name"]), ({"replicas": -1}, ["body", "replicas"]),
                          ({"update_config": {"order": "sideways"}}, ["body", "update_config", "order"]),
                          ({"healthcheck": {"test": ["sh"]}}, ["body", "healthcheck", "test"]),
                          ({"ports": [{"target": 0}]}, ["body", "ports", 0, "target"]),
                          ({"networks": [f"missing-{label}"]}, ["body", "networks", 0])]:
        response = client.post(f"{base}/services", json={**body, **override})
        assert response.status_code == 422, (override, response.text)
        assert response.json()["detail"][0]["loc"] == loc, (override, response.text)
    assert not engine.services.list(filters={"label": f"{LABEL}={label}"})

    created = client.post(f"{base}/services", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["service"]["name"] == name and created.json()["service"]["replicas"] == 1
    assert "hush-" not in created.text and "TOKEN=***" in created.json()["spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert client.post(f"{base}/services", json=body).status_code == 409
    wait_running(client, base, name, 1)

    scaled = client.post(f"{base}/services/{name}/scale", json={"replicas": 2})
    assert scaled.status_code == 200 and scaled.json()["service"]["replicas"] == 2, scaled.text
    detail = wait_running(client, base, name, 2)
    assert detail["service"]["running_tasks"] == 2
    tasks = client.get(f"{base}/services/{name}/tasks").json()
    assert len([t for t in tasks["data"] if t["state"] == "running"]) == 2

    updated = client.patch(f"{base}/services/{name}", json={"image": image_v2})
    assert updated.status_code == 200, updated.text
    assert updated.json()["previous_spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == image
    wait_running(client, base, name, 2, image=image_v2)
    rolled = client.post(f"{base}/services/{name}/rollback")
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == image
    wait_running(client, base, name, 2, image=image)

    logs = client.get(f"{base}/services/{name}/logs", params={"tail": 50})
    assert logs.status_code == 200 and "hello-from-" in logs.json()["logs"], logs.text
    live = client.get(f"{base}/services", params={"live": "true"}).json()["data"]
    assert any(s["name"] == name and s["running_tasks"] == 2 for s in live)
    synced = client.post(f"{base}/sync").json()
    assert synced["ok"] is True and synced["services"]["created"] >= 1 and synced["events"] >= 1
    engine_events = events(client, cluster["id"], source="engine", type="service")
    service_id = created.json()["service"]["service_id"]
    assert {"create", "update"} <= {e["action"] for e in engine_events if e["actor_id"] == service_id}
    assert all(e["payload"]["scope"] == "swarm" and e["time_nano"] for e in engine_events)
    with stack.sessions() as session:
        row = session.scalar(select(SwarmService).where(SwarmService.cluster_id == cluster["id"],
                                                        SwarmService.name == name))
        assert row.image.startswith(image) and row.replicas == 2 and row.labels[LABEL] == label
        assert row.update_config["Order"] == "start-first"

    assert client.delete(f"{base}/services/{name}").status_code == 204
    assert client.get(f"{base}/services/{name}").status_code == 404
    assert client.post(f"{base}/services/{name}/rollback").status_code == 404
    recorded = [(e["action"], e["result"]) for e in reversed(events(client, cluster["id"], source="api",
                                                                    type="service"))]
    assert recorded == [("create", "success"), ("create", "failure"), ("scale", "success"),
                        ("update", "success"), ("rollback", "success"), ("remove", "success"),
                        ("rollback", "failure")]
    assert "hush-" not in client.get(f"{base}/events", params={"limit": 1000}).text


# ---- stacks --------------------------------------------------------------------------------------------


def compose(image: str, label: str, services=("web", "worker")) -> str:
    lines = ["version: '3.8'", "services:"]
    for service in services:
        lines += [f"  {service}:", f"    image: {image}", f"    command: {json.dumps(SLEEPER)}",
                  "    deploy:", "      replicas: 1", "      labels:", f"        {LABEL}: '{label}'"]
    return "\n".join(lines) + "\n"


def test_stack_deploy_show_errors_and_remove(stack, engine, image, label):
    client = stack.account().client
    cluster = make_cluster(client)
    base = f"/swarm/clusters/{cluster['id']}"
    name = f"st{label}"

    broken = "version: '3.8'\nservices:\n  web:\n    image: x\n   bad: [\n"
    response = client.post(f"{base}/stacks", json={"name": name, "compose": broken})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "compose"]
    assert "line 5" in response.json()["detail"][0]["msg"] or "line 6" in response.json()["detail"][0]["msg"], \
        response.text
    no_image = "services:\n  web:\n    command: [sleep, '1']\n"
    response = client.post(f"{base}/stacks", json={"name": name, "compose": no_image})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "compose", "services", "web", "image"]
    missing = compose(f"devops-test/missing-{label}:1", label, services=("web",))
    response = client.post(f"{base}/stacks", json={"name": name, "compose": missing})
    assert response.status_code == 422 and "not on the manager" in response.text, response.text
    response = client.post(f"{base}/stacks", json={"name": name, "compose": "version: '2'\nservices: {a: {}}\n"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "compose", "version"]
    assert client.post(f"{base}/stacks", json={"name": "Bad Name", "compose": missing}).status_code == 422

    deployed = client.post(f"{base}/stacks", json={"name": name, "compose": compose(image, label)})
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["services"] == [f"{name}_web", f"{name}_worker"]

    def both_running():
        shown = client.get(f"{base}/stacks/{name}").json()
        running = {t["service_id"] for t in shown["tasks"] if t["state"] == "running"}
        return shown if len(shown["services"]) == 2 and len(running) == 2 else None

    shown = wait_until(both_running, message="both stack services running")
    assert shown["stack"]["compose"].startswith("version: '3.8'")
    assert {s["stack_name"] for s in shown["services"]} == {name}
    listed = client.get(f"{base}/stacks").json()
    assert [s["name"] for s in listed["data"]] == [name]
    assert client.get(f"{base}/stacks/nope-{label}").status_code == 404

    assert client.delete(f"{base}/stacks/{name}").status_code == 204
    wait_until(lambda: not engine.services.list(filters={"label": f"com.docker.stack.namespace={name}"}),
               message="the stack's services gone")
    assert client.get(f"{base}/stacks").json()["count"] == 0
    assert client.delete(f"{base}/stacks/{name}").status_code == 404
    recorded = [(e["action"], e["result"]) for e in reversed(events(client, cluster["id"], source="api",
                                                                    type="stack"))]
    assert recorded == [("deploy", "success"), ("remove", "success")]


# ---- networks, volumes, secrets, configs -----------------------------------------------------------------


def test_networks_volumes_secrets_and_configs(stack, engine, label):
    client = stack.account().client
    cluster = make_cluster(client)
    base = f"/swarm/clusters/{cluster['id']}"
    labels = {LABEL: label}

    network = client.post(f"{base}/networks", json={"name": f"net-{label}", "labels": labels})
    assert network.status_code == 201, network.text
    assert network.json()["driver"] == "overlay" and network.json()["scope"] == "swarm", network.text
    assert client.post(f"{base}/networks", json={"name": f"net-{label}"}).status_code == 409
    swarm_networks = client.get(f"{base}/networks", params={"scope": "swarm"}).json()["data"]
    assert f"net-{label}" in {n["name"] for n in swarm_networks}
    assert client.delete(f"{base}/networks/{network.json()['id']}").status_code == 204
    assert client.delete(f"{base}/networks/{network.json()['id']}").status_code == 404

    volume = client.post(f"{base}/volumes", json={"name": f"vol-{label}", "labels": labels})
    assert volume.status_code == 201, volume.text
    assert f"vol-{label}" in {v["name"] for v in client.get(f"{base}/volumes").json()["data"]}
    assert client.delete(f"{base}/volumes/vol-{label}").status_code == 204

    value = f"s3cr3t-{uuid.uuid4().hex}"
    bad = client.post(f"{base}/secrets", json={"name": "bad name!", "data": value})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "name"]
    assert value not in bad.text
    secret = client.post(f"{base}/secrets", json={"name": f"sec-{label}", "data": value, "labels": labels})
    assert secret.status_code == 201, secret.text
    assert secret.json()["name"] == f"sec-{label}" and value not in secret.text
    listed = client.get(f"{base}/secrets")
    assert f"sec-{label}" in {s["name"] for s in listed.json()["data"]} and value not in listed.text
    assert client.post(f"{base}/secrets", json={"name": f"sec-{label}", "data": "x"}).status_code == 409
    config = client.post(f"{base}/configs", json={"name": f"cfg-{label}", "data": "a=1", "labels": labels})
    assert config.status_code == 201, config.text
    assert f"cfg-{label}" in {c["name"] for c in client.get(f"{base}/configs").json()["data"]}
    assert client.delete(f"{base}/secrets/{secret.json()['id']}").status_code == 204
    assert client.delete(f"{base}/configs/{config.json()['id']}").status_code == 204
    assert client.delete(f"{base}/configs/{config.json()['id']}").status_code == 404

    everything = client.get(f"{base}/events", params={"limit": 1000})
    assert value not in everything.text
    with stack.sessions() as session:
        stored = session.scalars(select(SwarmEvent.payload).where(SwarmEvent.cluster_id == cluster["id"])).all()
        assert value not in json.dumps(stored)
    recorded = {(e["event_type"], e["action"], e["result"]) for e in everything.json()["data"]}
    assert recorded >= {("network", "create", "success"), ("network", "create", "failure"),
                        ("network", "remove", "success"), ("network", "remove", "failure"),
                        ("volume", "create", "success"), ("volume", "remove", "success"),
                        ("secret", "create", "success"), ("secret", "create", "failure"),
                        ("secret", "remove", "success"), ("config", "create", "success"),
                        ("config", "remove", "success"), ("config", "remove", "failure")}
    assert all(e["user_id"] is not None for e in everything.json()["data"])


# ---- accounts and roles ---------------------------------------------------------------------------------


def test_accounts_are_isolated_and_viewers_only_read(stack):
    owner_account = stack.account()
    owner = owner_account.client
    cluster = make_cluster(owner)
    base = f"/swarm/clusters/{cluster['id']}"
    other = stack.account().client
    for path in ("", "/nodes", "/nodes?live=true", "/services", "/services/x", "/stacks", "/stacks/x", "/events",
                 "/networks", "/volumes", "/secrets", "/configs"):
        assert other.get(f"{base}{path}").status_code == 404, path
    for method, path, body in (("DELETE", "", None), ("PATCH", "", {"auto_sync": True}), ("POST", "/sync", None),
                               ("POST", "/test", None), ("POST", "/services", {"name": "a", "image": "b"}),
                               ("POST", "/secrets", {"name": "a", "data": "b"}),
                               ("POST", "/stacks", {"name": "a", "compose": "services: {a: {image: b}}"})):
        assert other.request(method, f"{base}{path}", json=body).status_code == 404, (method, path)
    assert other.get("/swarm/clusters").json()["count"] == 0

    with stack.sessions.begin() as session:
        session.execute(update(User).where(User.id == owner_account.user_id).values(role="viewer"))
    assert owner.get(base).status_code == 200
    for method, path, body in (("POST", "/swarm/clusters", {"name": "v", "endpoint": SOCKET}),
                               ("PATCH", base, {"auto_sync": True}), ("DELETE", base, None),
                               ("POST", f"{base}/test", None), ("POST", f"{base}/sync", None),
                               ("PATCH", f"{base}/nodes/x", {"availability": "drain"}),
                               ("DELETE", f"{base}/nodes/x", None),
                               ("POST", f"{base}/services", {"name": "a", "image": "b"}),
                               ("POST", f"{base}/services/a/scale", {"replicas": 2}),
                               ("POST", f"{base}/services/a/rollback", None),
                               ("DELETE", f"{base}/services/a", None),
                               ("POST", f"{base}/stacks", {"name": "a", "compose": "x"}),
                               ("DELETE", f"{base}/stacks/a", None),
                               ("POST", f"{base}/networks", {"name": "a"}), ("DELETE", f"{base}/networks/a", None),
                               ("POST", f"{base}/volumes", {"name": "a"}), ("DELETE", f"{base}/volumes/a", None),
                               ("POST", f"{base}/secrets", {"name": "a", "data": "b"}),
                               ("DELETE", f"{base}/secrets/a", None),
                               ("POST", f"{base}/configs", {"name": "a", "data": "b"}),
                               ("DELETE", f"{base}/configs/a", None)):
        assert owner.request(method, path, json=body).status_code == 403, (method, path)


def test_sync_workflow_pauses_resumes_and_continues_as_new(stack):
    """Driven directly (1 s interval, 2 rounds per run): pause stops rounds, sync_now still runs
    one, resume restarts them, continue-as-new carries the interval, the pause and the count."""
    from workflows.swarm_sync import SwarmSyncInput  # noqa: PLC0415

    account = stack.account()
    cluster = make_cluster(account.client)  # no auto-sync: this test owns swarm-sync-<id>
    workflow_id = f"swarm-sync-{cluster['id']}"
    handle = stack.infra.run(stack.temporal.start_workflow(
        SwarmSyncWorkflow.run, SwarmSyncInput(cluster_id=cluster["id"], account_id=account.id, interval_seconds=1,
                                              rounds_before_continue=2),
        id=workflow_id, task_queue=stack.settings.task_queue))

    def state():
        return stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).query(SwarmSyncWorkflow.state))

    def signal(which) -> None:
        stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).signal(which))

    wait_until(lambda: state().total_rounds >= 3)
    assert describe(stack, workflow_id).run_id != handle.result_run_id  # continued as new
    signal(SwarmSyncWorkflow.pause)
    wait_until(lambda: state().paused)
    paused_at = state().total_rounds
    time.sleep(2.2)
    assert state().total_rounds <= paused_at + 1
    paused_at = state().total_rounds
    signal(SwarmSyncWorkflow.sync_now)
    wait_until(lambda: state().total_rounds == paused_at + 1)
    signal(SwarmSyncWorkflow.resume)
    wait_until(lambda: state().total_rounds >= paused_at + 3 and not state().paused)
    # a continue-as-new may have just happened: the new run has no round of its own yet
    latest = wait_until(lambda: (lambda st: st if st.last_result is not None else None)(state()))
    assert latest.interval_seconds == 1 and latest.last_result.ok is True
    assert account.client.delete(f"/swarm/clusters/{cluster['id']}").status_code == 204
    assert describe(stack, workflow_id).status.name == "TERMINATED"


# ---- pure checks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "loc", "says"), [
    ("services:\n  web:\n    image: [a\n", ["body", "compose"], "line 4"),
    ("services:\n  web:\n\timage: a\n", ["body", "compose"], "line 3"),
    ("- a\n- b\n", ["body", "compose"], "mapping"),
    ("version: '2.4'\nservices: {web: {image: a}}\n", ["body", "compose", "version"], "3.x"),
    ("services: {}\n", ["body", "compose", "services"], "at least one"),
    ("services: {web: {build: .}}\n", ["body", "compose", "services", "web", "image"], "needs an `image`"),
    ("services: {web: [a]}\n", ["body", "compose", "services", "web"], "mapping"),
])
def test_compose_validation_names_the_problem(text, loc, says):
    with pytest.raises(Invalid) as raised:
        validate_compose(text)
    error = raised.value.errors()[0]
    assert error["loc"] == loc and says in error["msg"], error


def test_compose_validation_answers_the_images():
    assert validate_compose("version: '3.8'\nservices:\n  a: {image: x:1}\n  b: {image: ' y '}\n") == \
        {"a": "x:1", "b": "y"}


def test_service_spec_is_what_docker_service_create_sends():
    from api.routes.swarm.service_specs import service_spec  # noqa: PLC0415

    spec = service_spec(ServiceCreate.model_validate({
        "name": "web", "image": "img:1", "command": ["sleep", "1"], "env": {"A": "1"}, "replicas": 3,
        "ports": [{"target": 80, "published": 8080}], "networks": ["backend"], "labels": {"k": "v"},
        "update_config": {"parallelism": 2, "delay": 1.5, "order": "start-first", "failure_action": "rollback",
                          "monitor": 10},
        "healthcheck": {"test": ["CMD", "true"], "interval": 2, "retries": 1}}))
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "img:1" and container["Args"] == ["sleep", "1"] and container["Env"] == ["A=1"]
    assert container["Healthcheck"]["Interval"] == 2_000_000_000 and container["Healthcheck"]["Retries"] == 1
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}} and spec["TaskTemplate"]["Networks"] == [
        {"Target": "backend"}]
    assert spec["UpdateConfig"] == {"Parallelism": 2, "Delay": 1_500_000_000, "FailureAction": "rollback",
                                    "Monitor": 10_000_000_000, "MaxFailureRatio": 0, "Order": "start-first"}
    assert spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress",
                                              "PublishedPort": 8080}]
    assert service_spec(ServiceCreate(name="g", image="i", mode="global"))["Mode"] == {"Global": {}}
