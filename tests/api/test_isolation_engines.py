"""Issue 10 item 3: one engine, many accounts.

- Which endpoints accounts may register (``DEVOPS_ENGINE_ALLOWLIST``): the decision as a pure
  function (local sockets and loopback refused outside development unless allowlisted, strict mode
  when the allowlist is non-empty), then one API test per create/update/test route.
- Two accounts on the same local (allowlisted, hence shared) engine: each sees and touches only
  objects labelled with its own account (containers, services, tasks, networks, volumes, synced
  rows); another account's object answers 404 and keeps running; an object made outside the
  service (no label) is invisible to both. Container and service logs are masked with the
  account's secrets.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid

import pytest
from sqlalchemy import select

from adapters.engine_access import endpoint_refusal, is_local_endpoint, normalize_endpoint
from db.models import DockerContainer, SwarmService
from tests import docker_support
from tests.harness import wait_for

SOCKET = "unix:///var/run/docker.sock"
LABEL = "devops-test-isolation"


# ---- the endpoint decision (pure) ----------------------------------------------------------------


def test_endpoints_normalise_to_one_spelling():
    assert normalize_endpoint("TCP://Docker.Example.COM:2376/") == "tcp://docker.example.com:2376"
    assert normalize_endpoint("tcp://10.0.0.5") == "tcp://10.0.0.5:2375"
    assert normalize_endpoint("unix:///var/run//./docker.sock") == "unix:///var/run/docker.sock"
    assert normalize_endpoint("tcp://[::1]:2375") == "tcp://[::1]:2375"


@pytest.mark.parametrize("endpoint", ["unix:///var/run/docker.sock", "unix:///run/user/1000/docker.sock",
                                      "tcp://127.0.0.1:2375", "tcp://127.9.9.9:2376", "tcp://localhost:2375",
                                      "tcp://LOCALHOST:2375", "tcp://0.0.0.0:2375", "tcp://[::1]:2375",
                                      "tcp://[::ffff:127.0.0.1]:2375", "npipe:////./pipe/docker_engine"])
def test_local_endpoints_are_refused_outside_development_unless_allowlisted(endpoint):
    assert is_local_endpoint(endpoint) is True
    for environment in ("production", "test", "staging"):
        refusal = endpoint_refusal(endpoint, [], environment, local=True)
        assert refusal is not None and "DEVOPS_ENGINE_ALLOWLIST" in refusal
    assert endpoint_refusal(endpoint, [], "development", local=True) is None
    assert endpoint_refusal(endpoint, [normalize_endpoint(endpoint)], "production", local=True) is None


def test_the_workers_own_docker_host_and_this_machines_addresses_are_local():
    assert is_local_endpoint("tcp://203.0.113.7:2376", worker_docker_host="tcp://203.0.113.7:2376") is True
    assert is_local_endpoint("tcp://203.0.113.7:2376", worker_docker_host="", resolve=False) is False
    assert is_local_endpoint("tcp://198.51.100.20:2376", worker_docker_host="", resolve=False) is False
    # a name that resolves to loopback
    assert is_local_endpoint("tcp://localhost.:2375", worker_docker_host="") is True


def test_remote_endpoints_follow_the_allowlist():
    remote = "tcp://203.0.113.7:2376"
    assert endpoint_refusal(remote, [], "production", local=False) is None  # no allowlist: any remote engine
    strict = ["unix:///var/run/docker.sock", "tcp://10.0.0.*:2376"]
    refusal = endpoint_refusal(remote, strict, "production", local=False)
    assert refusal is not None and "DEVOPS_ENGINE_ALLOWLIST" in refusal
    assert endpoint_refusal("tcp://10.0.0.9:2376", strict, "production", local=False) is None
    assert endpoint_refusal("TCP://10.0.0.9:2376/", strict, "production", local=False) is None
    assert endpoint_refusal("tcp://10.0.0.9:2377", strict, "production", local=False) is not None
    assert endpoint_refusal("unix:///var/run/docker.sock", strict, "production", local=True) is None
    assert endpoint_refusal("unix:///tmp/docker.sock", strict, "production", local=True) is not None


# ---- the endpoint decision through the API (the test stack allowlists only the docker socket) -----


def _refused_on_endpoint(response) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "endpoint"], detail
    assert "DEVOPS_ENGINE_ALLOWLIST" in detail[0]["msg"], detail


def test_create_update_and_test_routes_apply_the_allowlist(stack, monkeypatch):
    client = stack.account().client
    for kind in ("/docker/hosts", "/swarm/clusters"):
        for endpoint in ("tcp://127.0.0.1:2375", "unix:///tmp/other-docker.sock", "tcp://localhost:2375",
                         "tcp://203.0.113.7:2376"):  # the last one: strict mode (the allowlist is non-empty)
            _refused_on_endpoint(client.post(kind, json={"name": uuid.uuid4().hex[:8], "endpoint": endpoint,
                                                         "auto_sync": False}))
        created = client.post(kind, json={"name": uuid.uuid4().hex[:8], "endpoint": SOCKET, "auto_sync": False})
        assert created.status_code == 201, created.text
        url = f"{kind}/{created.json()['id']}"
        _refused_on_endpoint(client.patch(url, json={"endpoint": "tcp://127.0.0.1:2375"}))
        assert client.get(url).json()["endpoint"] == SOCKET
        assert client.post(f"{url}/test").status_code == 200
        # the operator takes the socket off the list: the saved engine may no longer be used
        monkeypatch.setattr(stack.settings, "engine_allowlist", [])
        _refused_on_endpoint(client.post(f"{url}/test"))
        listed = client.get(f"{url}/{'containers' if 'docker' in kind else 'services'}", params={"live": True})
        _refused_on_endpoint(listed)
        monkeypatch.setattr(stack.settings, "engine_allowlist", [SOCKET])
        # in development local engines stay usable without the list
        monkeypatch.setattr(stack.settings, "environment", "development")
        monkeypatch.setattr(stack.settings, "engine_allowlist", [])
        assert client.post(f"{url}/test").status_code == 200
        monkeypatch.setattr(stack.settings, "environment", "test")
        monkeypatch.setattr(stack.settings, "engine_allowlist", [SOCKET])


# ---- two accounts on one engine ---------------------------------------------------------------------


engine, image = docker_support.engine, docker_support.image  # the shared fixtures
label = docker_support.label_fixture(LABEL, "services", "containers", "volumes", "networks")


def _host(client) -> int:
    created = client.post("/docker/hosts", json={"name": uuid.uuid4().hex[:8], "endpoint": SOCKET,
                                                 "auto_sync": False})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_a_shared_engine_shows_each_account_only_its_own_containers(stack, engine, image, label):
    a, b = stack.account(), stack.account()
    host_a, host_b = _host(a.client), _host(b.client)
    secret = f"s3cret-{label}-value"
    assert b.client.put("/secrets", json={"name": "TOKEN", "value": secret}).status_code in (200, 201)
    made = b.client.post(f"/docker/hosts/{host_b}/containers", json={
        "image": image, "name": f"iso-b-{label}", "start": True, "labels": {LABEL: label},
        "command": ["sh", "-c", f"echo token={secret}; sleep 120"]})
    assert made.status_code == 201, made.text
    theirs = made.json()["container_id"]
    outside = engine.containers.run(image, ["sleep", "120"], detach=True, name=f"iso-cli-{label}",
                                    labels={LABEL: label})
    base_a, base_b = f"/docker/hosts/{host_a}/containers", f"/docker/hosts/{host_b}/containers"

    def ids(client, base) -> set[str]:
        return {c["container_id"] for c in client.get(base, params={"live": True}).json()["data"]}

    assert theirs in ids(b.client, base_b) and outside.id not in ids(b.client, base_b)
    assert theirs not in ids(a.client, base_a) and outside.id not in ids(a.client, base_a)
    for reference in (theirs, theirs[:12], f"iso-b-{label}"):
        assert a.client.get(f"{base_a}/{reference}").status_code == 404
        assert a.client.get(f"{base_a}/{reference}/logs").status_code == 404
        assert a.client.post(f"{base_a}/{reference}/stop", params={"timeout": 0}).status_code == 404
        assert a.client.post(f"{base_a}/{reference}/restart", params={"timeout": 0}).status_code == 404
        assert a.client.delete(f"{base_a}/{reference}", params={"force": True}).status_code == 404
    for client, base in ((a.client, base_a), (b.client, base_b)):  # made outside the service: nobody's
        assert client.get(f"{base}/{outside.id}").status_code == 404
        assert client.delete(f"{base}/{outside.id}", params={"force": True}).status_code == 404
    assert engine.containers.get(theirs).status == "running"
    assert engine.containers.get(outside.id).status == "running"

    # the synced rows too: a round stores only the account's own containers
    for client, host in ((a.client, host_a), (b.client, host_b)):
        assert client.post(f"/docker/hosts/{host}/sync").json()["ok"] is True
    with stack.sessions() as session:
        rows_a = set(session.scalars(select(DockerContainer.container_id).where(DockerContainer.host_id == host_a)))
        rows_b = set(session.scalars(select(DockerContainer.container_id).where(DockerContainer.host_id == host_b)))
    assert theirs not in rows_a and outside.id not in rows_a
    assert theirs in rows_b and outside.id not in rows_b
    assert all(c["labels"]["devops.account"] == str(a.id)
               for c in a.client.get(base_a).json()["data"])

    # logs through the host route are masked with the account's secrets
    logs = wait_for(lambda: (text := b.client.get(f"{base_b}/{theirs}/logs").json()["logs"]) and "token=" in text
                    and text, timeout=30, message="the container's output")
    assert secret not in logs and "token=***" in logs

    # networks and volumes are the account's too
    volume = b.client.post(f"/docker/hosts/{host_b}/volumes", json={"name": f"iso-{label}", "labels": {LABEL: label}})
    assert volume.status_code == 201, volume.text
    network = b.client.post(f"/docker/hosts/{host_b}/networks", json={"name": f"iso-{label}",
                                                                       "labels": {LABEL: label}})
    assert network.status_code == 201, network.text
    assert f"iso-{label}" not in {v["name"] for v in a.client.get(f"/docker/hosts/{host_a}/volumes").json()["data"]}
    assert f"iso-{label}" in {v["name"] for v in b.client.get(f"/docker/hosts/{host_b}/volumes").json()["data"]}
    assert a.client.get(f"/docker/hosts/{host_a}/volumes/iso-{label}").status_code == 404
    assert a.client.delete(f"/docker/hosts/{host_a}/volumes/iso-{label}").status_code == 404
    assert a.client.post(f"/docker/hosts/{host_a}/volumes", json={"name": f"iso-{label}"}).status_code == 409
    assert network.json()["id"] not in {n["id"] for n in a.client.get(f"/docker/hosts/{host_a}/networks").json()["data"]}
    assert a.client.delete(f"/docker/hosts/{host_a}/networks/{network.json()['id']}").status_code == 404
    assert engine.volumes.get(f"iso-{label}") and engine.networks.get(network.json()["id"])
    # the service's own label cannot be forged
    forged = a.client.post(f"/docker/hosts/{host_a}/volumes", json={"name": f"forged-{label}",
                                                                    "labels": {"devops.account": str(b.id)}})
    assert forged.status_code == 422 and forged.json()["detail"][0]["loc"][:2] == ["body", "labels"]
    assert b.client.delete(f"{base_b}/{theirs}", params={"force": True}).status_code == 204


def _context(dockerfile: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_images_on_a_shared_engine(stack, engine, image, label):
    a, b = stack.account(), stack.account()
    host_a, host_b = _host(a.client), _host(b.client)
    base = f"/docker/hosts/{host_a}/images"
    # the shared base image may be inspected and run, but not re-tagged, pushed or removed
    assert a.client.get(f"{base}/{image}").status_code == 200
    assert a.client.post(f"{base}/{image}/tag", json={"repository": f"iso-{label}", "tag": "1"}).status_code == 404
    assert a.client.delete(f"{base}/{image}").status_code == 404
    assert engine.images.get(image)
    assert image not in {t for i in a.client.get(base, params={"live": True}).json()["data"] for t in i["repo_tags"]}
    # an image another account built is that account's: not visible, runnable or re-taggable by A
    tag = f"devops-test/iso-{label}:b"
    built = b.client.post(f"/docker/hosts/{host_b}/images/build", params={"tag": tag},
                          content=_context(f"FROM {image}\n"), headers={"Content-Type": "application/x-tar"})
    assert built.status_code == 200, built.text
    try:
        assert tag in {t for i in b.client.get(f"/docker/hosts/{host_b}/images", params={"live": True}).json()["data"]
                       for t in i["repo_tags"]}
        assert a.client.get(f"{base}/{tag}").status_code == 404
        assert a.client.post(f"/docker/hosts/{host_a}/containers", json={"image": tag}).status_code == 404
        taken = a.client.post(f"/docker/hosts/{host_a}/images/build", params={"tag": tag},
                              content=_context(f"FROM {image}\n"), headers={"Content-Type": "application/x-tar"})
        assert taken.status_code == 409, taken.text
        assert engine.images.get(tag).id == built.json()["image_id"]
    finally:
        engine.images.remove(built.json()["image_id"], force=True)


# ---- services on a shared swarm ------------------------------------------------------------------------


def _cluster(client) -> int:
    created = client.post("/swarm/clusters", json={"name": uuid.uuid4().hex[:8], "endpoint": SOCKET,
                                                   "auto_sync": False})
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.mark.xdist_group("swarm")
def test_a_shared_swarm_shows_each_account_only_its_own_services(stack, engine, image, label):
    if not engine.info().get("Swarm", {}).get("ControlAvailable"):
        pytest.skip("the engine is not a swarm manager")
    a, b = stack.account(), stack.account()
    cluster_a, cluster_b = _cluster(a.client), _cluster(b.client)
    name = f"iso-{label}"
    made = b.client.post(f"/swarm/clusters/{cluster_b}/services", json={
        "name": name, "image": image, "command": ["sleep", "300"], "replicas": 1, "labels": {LABEL: label}})
    assert made.status_code == 201, made.text
    assert made.json()["service"]["labels"]["devops.account"] == str(b.id)
    outside = engine.services.create(image, ["sleep", "300"], name=f"iso-cli-{label}", labels={LABEL: label})
    base_a, base_b = f"/swarm/clusters/{cluster_a}/services", f"/swarm/clusters/{cluster_b}/services"

    def names(client, base) -> set[str]:
        return {s["name"] for s in client.get(base, params={"live": True}).json()["data"]}

    assert name in names(b.client, base_b) and f"iso-cli-{label}" not in names(b.client, base_b)
    assert name not in names(a.client, base_a) and f"iso-cli-{label}" not in names(a.client, base_a)
    for path, method in ((f"{base_a}/{name}", "GET"), (f"{base_a}/{name}/logs", "GET"),
                         (f"{base_a}/{name}/tasks", "GET"), (f"{base_a}/{name}", "DELETE"),
                         (f"{base_a}/{name}/rollback", "POST")):
        assert a.client.request(method, path).status_code == 404, path
    assert a.client.post(f"{base_a}/{name}/scale", json={"replicas": 0}).status_code == 404
    assert a.client.patch(f"{base_a}/{name}", json={"image": image}).status_code == 404
    assert b.client.get(f"{base_b}/iso-cli-{label}").status_code == 404
    assert b.client.delete(f"{base_b}/iso-cli-{label}").status_code == 404
    # a rollout of another account's service: the service does not exist for it
    refused = a.client.post("/swarm/deployments", json={"cluster_id": cluster_a, "service": name, "image": image,
                                                        "strategy": "rolling"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "service"], refused.text
    assert engine.services.get(name) and engine.services.get(outside.id)

    for client, cluster in ((a.client, cluster_a), (b.client, cluster_b)):
        assert client.post(f"/swarm/clusters/{cluster}/sync").json()["ok"] is True
    with stack.sessions() as session:
        rows_a = set(session.scalars(select(SwarmService.name).where(SwarmService.cluster_id == cluster_a)))
        rows_b = set(session.scalars(select(SwarmService.name).where(SwarmService.cluster_id == cluster_b)))
    assert name not in rows_a and f"iso-cli-{label}" not in rows_a
    assert name in rows_b and f"iso-cli-{label}" not in rows_b

    # swarm secrets: listed and removed only by their account
    created = b.client.post(f"/swarm/clusters/{cluster_b}/secrets", json={"name": f"iso-{label}", "data": "x",
                                                                         "labels": {LABEL: label}})
    assert created.status_code == 201, created.text
    assert created.json()["id"] not in {s["id"] for s in a.client.get(f"/swarm/clusters/{cluster_a}/secrets")
                                        .json()["data"]}
    assert a.client.delete(f"/swarm/clusters/{cluster_a}/secrets/{created.json()['id']}").status_code == 404
    assert b.client.delete(f"/swarm/clusters/{cluster_b}/secrets/{created.json()['id']}").status_code == 204
    assert b.client.delete(f"{base_b}/{name}").status_code == 204
    outside.remove()
    time.sleep(0.5)
