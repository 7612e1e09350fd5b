"""Docker hosts against the real engine: CRUD and validation, the HostSyncWorkflow (started on
create, stopped on delete, 50 containers synced, an unchanged round writes nothing, a dead socket
reaches ``error`` after 5 rounds and recovers), container/image/network/volume actions recorded as
DockerActivity, and a real registry (Debian's docker-registry on 127.0.0.1:5000)."""

from __future__ import annotations

import io
import socket
import tarfile
import time
import uuid

import httpx
import pytest
from sqlalchemy import select, update

from db.models import DockerContainer, DockerHost, User
from tests import docker_support
from tests.conftest import IN_CI
from workflows.host_sync import HostSyncWorkflow

SOCKET = "unix:///var/run/docker.sock"
REGISTRY_URL = "http://127.0.0.1:5000"


#: A label value unique to the test; every container, network and volume made with it is removed.
engine, image = docker_support.engine, docker_support.image  # the shared fixtures
label = docker_support.label_fixture("devops-test-hosts", "containers", "networks", "volumes")


def make_host(client, **overrides) -> dict:
    body = {"name": f"host-{uuid.uuid4().hex[:8]}", "endpoint": SOCKET, "auto_sync": False, **overrides}
    response = client.post("/docker/hosts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def sync(client, host_id: int) -> dict:
    response = client.post(f"/docker/hosts/{host_id}/sync")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    return response.json()


def describe(stack, workflow_id: str):
    async def go():
        return await stack.temporal.get_workflow_handle(workflow_id).describe()

    return stack.infra.run(go())


@pytest.fixture
def allow_tmp_sockets(stack, monkeypatch, tmp_path):
    """Local sockets need the operator's engine allowlist: let this test's dead sockets in."""
    monkeypatch.setattr(stack.settings, "engine_allowlist", [*stack.settings.engine_allowlist, f"unix://{tmp_path}/*"])


def dead_socket(tmp_path) -> str:
    """A path that is a unix socket nobody listens on any more: connections are refused."""
    path = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return f"unix://{path}"


# ---- CRUD and validation ---------------------------------------------------------------------------


def test_host_crud_validation_and_test_connection(stack, engine, tmp_path, allow_tmp_sockets):
    client = stack.account().client
    host = make_host(client, environment="staging", sync_interval_seconds=120, tls_ca="-----BEGIN CERTIFICATE-----")
    assert host["status"] == "pending" and host["environment"] == "staging" and host["tls_configured"] is True
    assert "tls_ca" not in host and host["workflow_id"] is None
    with stack.sessions() as session:
        row = session.get(DockerHost, host["id"])
        assert row.encrypted_tls_ca and b"BEGIN" not in row.encrypted_tls_ca

    regular = tmp_path / "not-a-socket"
    regular.write_text("x")
    bad = [({"sync_interval_seconds": 29}, "sync_interval_seconds"),
           ({"sync_interval_seconds": 3601}, "sync_interval_seconds"),
           ({"endpoint": "http://127.0.0.1:2375"}, "endpoint"),
           ({"endpoint": "tcp://127.0.0.1"}, "endpoint"),
           ({"endpoint": "unix:///nonexistent/docker.sock"}, "endpoint"),
           ({"endpoint": f"unix://{regular}"}, "endpoint"),
           ({"environment": "qa"}, "environment"),
           ({"tls_cert": "x"}, "tls_key")]
    for override, field in bad:
        response = client.post("/docker/hosts", json={"name": "bad", "endpoint": SOCKET, **override})
        assert response.status_code == 422, (override, response.text)
        assert field in response.json()["detail"][0]["loc"], (override, response.text)
    assert client.patch(f"/docker/hosts/{host['id']}", json={"sync_interval_seconds": 3601}).status_code == 422

    assert client.post("/docker/hosts", json={"name": host["name"], "endpoint": SOCKET}).status_code == 409
    updated = client.patch(f"/docker/hosts/{host['id']}", json={"environment": "production", "tls_ca": None})
    assert updated.status_code == 200, updated.text
    assert updated.json()["environment"] == "production" and updated.json()["tls_configured"] is False

    tested = client.post(f"/docker/hosts/{host['id']}/test")
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
    assert tested.json()["docker_version"] == engine.version()["Version"]
    dead = make_host(client, endpoint=dead_socket(tmp_path))
    failed = client.post(f"/docker/hosts/{dead['id']}/test").json()
    assert failed["ok"] is False and "cannot be reached" in failed["error"]
    actions = client.get("/docker/activities", params={"action": "host.test"}).json()["data"]
    assert [(a["host_id"], a["result"]) for a in actions] == [(dead["id"], "failure"), (host["id"], "success")]

    listed = client.get("/docker/hosts").json()
    assert {h["id"] for h in listed["data"]} == {host["id"], dead["id"]}
    assert client.delete(f"/docker/hosts/{host['id']}").status_code == 204
    assert client.get(f"/docker/hosts/{host['id']}").status_code == 404


def test_private_tcp_endpoints_follow_the_private_targets_rule(stack, monkeypatch):
    client = stack.account().client
    # an empty engine allowlist accepts remote engines (loopback ones are local: tests/api/test_isolation_engines.py)
    monkeypatch.setattr(stack.settings, "engine_allowlist", [])
    stack.settings.notify_allow_private_targets = False  # the running API reads this very object
    try:
        response = client.post("/docker/hosts", json={"name": "lan", "endpoint": "tcp://10.255.255.1:2375"})
        assert response.status_code == 422 and "DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS" in response.text
    finally:
        stack.settings.notify_allow_private_targets = True
    response = client.post("/docker/hosts", json={"name": "lan", "endpoint": "tcp://10.255.255.1:2375",
                                                  "auto_sync": False})
    assert response.status_code == 201, response.text


def test_accounts_are_isolated_and_viewers_only_read(stack, tmp_path):
    owner_account = stack.account()
    owner = owner_account.client
    host = make_host(owner)
    registry = owner.post("/docker/registries", json={"name": "r", "url": REGISTRY_URL}).json()
    other = stack.account().client
    for path in (f"/docker/hosts/{host['id']}", f"/docker/hosts/{host['id']}/containers",
                 f"/docker/hosts/{host['id']}/events", f"/docker/hosts/{host['id']}/networks",
                 f"/docker/registries/{registry['id']}", f"/docker/registries/{registry['id']}/repositories"):
        assert other.get(path).status_code == 404, path
    assert other.get("/docker/activities", params={"host_id": host["id"]}).status_code == 404
    assert other.delete(f"/docker/hosts/{host['id']}").status_code == 404
    assert other.post(f"/docker/hosts/{host['id']}/containers", json={"image": "x"}).status_code == 404
    assert other.post(f"/docker/hosts/{host['id']}/sync").status_code == 404
    pushed = other.post(f"/docker/hosts/{make_host(other)['id']}/images/push",
                        json={"image": "x", "registry_id": registry["id"], "repository": "a"})
    assert pushed.status_code == 422 and pushed.json()["detail"][0]["loc"] == ["body", "registry_id"]
    assert other.get("/docker/hosts").json()["count"] == 1

    with stack.sessions.begin() as session:  # the owner becomes a viewer: reads yes, writes 403
        session.execute(update(User).where(User.id == owner_account.user_id).values(role="viewer"))
    assert owner.get(f"/docker/hosts/{host['id']}").status_code == 200
    for method, path, body in (("POST", "/docker/hosts", {"name": "v", "endpoint": SOCKET}),
                               ("PATCH", f"/docker/hosts/{host['id']}", {"auto_sync": True}),
                               ("DELETE", f"/docker/hosts/{host['id']}", None),
                               ("POST", f"/docker/hosts/{host['id']}/containers", {"image": "x"}),
                               ("POST", f"/docker/hosts/{host['id']}/containers/abc/stop", None),
                               ("POST", f"/docker/hosts/{host['id']}/sync", None),
                               ("POST", f"/docker/hosts/{host['id']}/test", None),
                               ("POST", "/docker/registries", {"name": "v", "url": REGISTRY_URL}),
                               ("DELETE", f"/docker/registries/{registry['id']}", None)):
        assert owner.request(method, path, json=body).status_code == 403, (method, path)


# ---- the sync workflow ----------------------------------------------------------------------------


def test_sync_workflow_starts_on_create_follows_patches_and_stops_on_delete(stack):
    client = stack.account().client
    host = make_host(client, auto_sync=True, sync_interval_seconds=3600)
    workflow_id = f"host-sync-{host['id']}"
    assert host["workflow_id"] == workflow_id
    assert describe(stack, workflow_id).status.name == "RUNNING"
    # the first round runs at once
    shown = wait_until(lambda: (h := client.get(f"/docker/hosts/{host['id']}").json())["status"] == "connected"
                       and h)
    # the engine is shared (allowlisted): none of its images is this new account's
    assert shown["metrics"]["docker_version"] and shown["metrics"]["cpus"] >= 1 and shown["images"] == 0

    assert client.patch(f"/docker/hosts/{host['id']}", json={"sync_interval_seconds": 45}).status_code == 200

    def state():
        async def go():
            return await stack.temporal.get_workflow_handle(workflow_id).query(HostSyncWorkflow.state)

        return stack.infra.run(go())

    wait_until(lambda: state().interval_seconds == 45)
    assert client.patch(f"/docker/hosts/{host['id']}", json={"auto_sync": False}).status_code == 200
    wait_until(lambda: describe(stack, workflow_id).status.name == "TERMINATED")
    assert client.patch(f"/docker/hosts/{host['id']}", json={"auto_sync": True}).json()["workflow_id"] == workflow_id
    wait_until(lambda: describe(stack, workflow_id).status.name == "RUNNING")
    assert state().interval_seconds == 45
    assert client.delete(f"/docker/hosts/{host['id']}").status_code == 204
    assert describe(stack, workflow_id).status.name == "TERMINATED"


def wait_until(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def _row_marks(stack, host_id: int, ids: set[str]) -> dict[str, tuple]:
    with stack.sessions() as session:
        rows = session.scalars(select(DockerContainer).where(DockerContainer.host_id == host_id,
                                                             DockerContainer.container_id.in_(ids)))
        return {r.container_id: (r.id, r.synced_at, r.fingerprint) for r in rows}


# The engine is shared: swarm rollouts churn task containers all the time, so this test runs in
# their xdist group (never beside them), and looks for a quiet round a little longer.
@pytest.mark.xdist_group("swarm")
def test_sync_of_50_containers_then_an_unchanged_round_writes_nothing(stack, engine, image, label):
    account = stack.account()
    client = account.client
    # auto_sync off: an automatic first round racing the creations below would take some of them
    host = make_host(client, auto_sync=False)
    ids = set()
    for i in range(50):
        # the engine is shared: a round stores the account's own (labelled) containers only
        created = engine.api.create_container(image, command=["true"], name=f"sync-{label}-{i}",
                                              labels={"devops-test-hosts": label, "index": str(i),
                                                      "devops.account": str(account.id)})
        ids.add(created["Id"])
    first = sync(client, host["id"])
    assert first["ok"] is True and first["containers"]["created"] >= 50 and first["rows_written"] >= 50
    listed = client.get(f"/docker/hosts/{host['id']}/containers",
                        params={"label": f"devops-test-hosts={label}"}).json()
    assert listed["count"] == 50 and {c["container_id"] for c in listed["data"]} == ids
    one = next(c for c in listed["data"] if c["labels"]["index"] == "7")
    assert one["name"] == f"sync-{label}-7" and one["image"] == image and one["state"] == "created"
    assert one["status"] == "Created" and one["image_id"].startswith("sha256:") and one["created"]
    events = client.get(f"/docker/hosts/{host['id']}/events", params={"type": "container", "action": "create",
                                                                       "limit": 1000}).json()
    assert ids <= {e["actor_id"] for e in events["data"]}

    # Nothing changed: no row written. Other tests may share this engine, so a round that saw
    # their changes is repeated; our 50 rows must be untouched by every one of them.
    quiet = None
    for attempt in range(40):  # up to ~20 s: a removed service's containers take a while to go
        if attempt:
            time.sleep(0.5)
        before = _row_marks(stack, host["id"], ids)
        with stack.sessions() as session:
            host_before = session.get(DockerHost, host["id"]).last_synced_at
        again = sync(client, host["id"])
        assert again["ok"] is True
        assert _row_marks(stack, host["id"], ids) == before  # our 50 rows: never rewritten
        if again["rows_written"] == 0:
            quiet = again
            with stack.sessions() as session:
                assert session.get(DockerHost, host["id"]).last_synced_at == host_before
            break
    assert quiet is not None, "every round wrote rows"
    assert quiet["containers"]["created"] == quiet["containers"]["updated"] == quiet["containers"]["deleted"] == 0
    assert quiet["containers"]["unchanged"] >= 50 and quiet["events"] == 0

    removed = sorted(ids)[:10]
    for container_id in removed:
        engine.api.remove_container(container_id)
    third = sync(client, host["id"])
    assert third["containers"]["deleted"] >= 10
    left = {c["container_id"] for c in client.get(f"/docker/hosts/{host['id']}/containers",
                                                  params={"label": f"devops-test-hosts={label}"}).json()["data"]}
    assert left == ids - set(removed)
    assert client.delete(f"/docker/hosts/{host['id']}").status_code == 204


def test_dead_socket_reaches_error_after_5_rounds_and_recovers(stack, tmp_path, allow_tmp_sockets):
    client = stack.account().client
    host = make_host(client, endpoint=dead_socket(tmp_path), auto_sync=True, sync_interval_seconds=3600)
    # the workflow's first round, at once
    shown = wait_until(lambda: (h := client.get(f"/docker/hosts/{host['id']}").json())["consecutive_failures"] == 1
                       and h)
    assert shown["status"] == "disconnected" and "cannot be reached" in shown["last_error"]
    for failures in (2, 3, 4, 5):
        round_ = sync(client, host["id"])
        assert round_["ok"] is False and round_["consecutive_failures"] == failures
        assert round_["host_status"] == ("error" if failures >= 5 else "disconnected")
    assert client.get(f"/docker/hosts/{host['id']}").json()["status"] == "error"
    assert describe(stack, f"host-sync-{host['id']}").status.name == "RUNNING"  # a host error never fails it

    assert client.patch(f"/docker/hosts/{host['id']}", json={"endpoint": SOCKET}).status_code == 200
    # the endpoint change wakes the workflow; an explicit round answers for sure
    recovered = sync(client, host["id"])
    assert recovered["ok"] is True and recovered["host_status"] in ("connected", "")
    shown = client.get(f"/docker/hosts/{host['id']}").json()
    assert shown["status"] == "connected" and shown["consecutive_failures"] == 0 and shown["last_error"] is None
    client.delete(f"/docker/hosts/{host['id']}")


def test_sync_without_auto_sync_runs_one_round(stack):
    client = stack.account().client
    host = make_host(client)
    first = sync(client, host["id"])
    assert first["ok"] is True and first["workflow_id"] == f"host-sync-{host['id']}"
    assert describe(stack, first["workflow_id"]).status.name == "COMPLETED"
    assert client.get(f"/docker/hosts/{host['id']}").json()["status"] == "connected"


# ---- actions on a host ------------------------------------------------------------------------------


def test_container_actions_are_recorded(stack, engine, image, label):
    account = stack.account()
    client = account.client
    host = make_host(client)
    base = f"/docker/hosts/{host['id']}/containers"
    assert client.post(base, json={"image": image, "name": "bad name!"}).status_code == 422
    assert client.post(base, json={"image": image, "env": {"A=B": "x"}}).json()["detail"][0]["loc"][:2] == \
        ["body", "env"]
    created = client.post(base, json={"image": image, "command": ["sh", "-c", "echo hello-$WHO; sleep 30"],
                                      "env": {"WHO": "secret-value"}, "name": f"act-{label}",
                                      "labels": {"devops-test-hosts": label}})
    assert created.status_code == 201, created.text
    cid = created.json()["container_id"]
    assert created.json()["state"] == "created"
    inspected = client.get(f"{base}/{cid}").json()
    assert "WHO=***" in inspected["Config"]["Env"] and "secret-value" not in str(inspected)
    assert client.post(f"{base}/{cid}/start").json()["state"] == "running"
    wait_until(lambda: "hello-secret-value" in client.get(f"{base}/{cid}/logs", params={"tail": 10}).json()["logs"])
    assert client.delete(f"{base}/{cid}").status_code == 409  # running, no force
    assert client.post(f"{base}/{cid}/restart", params={"timeout": 0}).json()["state"] == "running"
    assert client.post(f"{base}/{cid}/stop", params={"timeout": 0}).json()["state"] == "exited"
    assert client.delete(f"{base}/{cid}").status_code == 204
    assert client.get(f"{base}/{cid}").status_code == 404
    assert client.post(f"{base}/{cid}/start").status_code == 404
    assert client.post(base, json={"image": "devops-test/none:missing"}).status_code == 404

    live = client.get(base, params={"live": True, "label": f"devops-test-hosts={label}"}).json()
    assert live["live"] is True and live["count"] == 0
    activities = client.get("/docker/activities", params={"host_id": host["id"]}).json()["data"]
    done: list[tuple[str, str]] = []
    for entry in reversed(activities):
        pair = (entry["action"], entry["result"])
        if not done or done[-1] != pair:  # the logs were polled a few times
            done.append(pair)
    assert done == [("container.create", "success"), ("container.start", "success"), ("container.logs", "success"),
                    ("container.remove", "failure"), ("container.restart", "success"),
                    ("container.stop", "success"), ("container.remove", "success"),
                    ("container.start", "failure"), ("container.create", "failure")]
    first = activities[-1]
    assert first["user_id"] == account.user_id and first["params"]["env_names"] == ["WHO"]
    assert "secret-value" not in str(activities)
    failed = next(a for a in activities if a["result"] == "failure")
    assert failed["error"]


def _context(dockerfile: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_images_build_tag_remove_and_networks_volumes(stack, engine, image, label):
    client = stack.account().client
    host = make_host(client)
    base = f"/docker/hosts/{host['id']}"
    tag = f"devops-test/built-{label}:1"
    built = client.post(f"{base}/images/build", params={"tag": tag},
                        content=_context(f"FROM {image}\nLABEL devops-test-hosts={label}\nRUN echo hi > /hello\n"),
                        headers={"Content-Type": "application/x-tar"})
    assert built.status_code == 200, built.text
    image_id = built.json()["image_id"]
    try:
        assert tag in built.json()["repo_tags"]
        failing = client.post(f"{base}/images/build", params={"tag": f"devops-test/broken-{label}:1"},
                              content=_context(f"FROM {image}\nRUN exit 3\n"),
                              headers={"Content-Type": "application/x-tar"})
        assert failing.status_code == 422, failing.text
        assert client.post(f"{base}/images/build", params={"tag": "x"}, content=b"x",
                           headers={"Content-Type": "text/plain"}).status_code == 415
        tagged = client.post(f"{base}/images/{tag}/tag", json={"repository": f"devops-test/again-{label}",
                                                               "tag": "2"})
        assert tagged.status_code == 200, tagged.text
        assert tagged.json()["image_id"] == image_id
        assert f"devops-test/again-{label}:2" in tagged.json()["repo_tags"]
        assert client.post(f"{base}/images/devops-test/none:missing/tag",
                           json={"repository": "a", "tag": "b"}).status_code == 404
        live = client.get(f"{base}/images", params={"live": True}).json()
        assert any(i["image_id"] == image_id for i in live["data"])
        assert client.delete(f"{base}/images/devops-test/again-{label}:2").status_code == 204
        assert client.delete(f"{base}/images/devops-test/again-{label}:2").status_code == 404
    finally:
        engine.images.remove(image_id, force=True)

    network = client.post(f"{base}/networks", json={"name": f"net-{label}", "labels": {"devops-test-hosts": label}})
    assert network.status_code == 201, network.text
    assert client.post(f"{base}/networks", json={"name": f"net-{label}"}).status_code == 409
    assert client.get(f"{base}/networks/{network.json()['id']}").json()["name"] == f"net-{label}"
    assert any(n["name"] == f"net-{label}" for n in client.get(f"{base}/networks").json()["data"])
    assert client.delete(f"{base}/networks/{network.json()['id']}").status_code == 204
    assert client.delete(f"{base}/networks/{network.json()['id']}").status_code == 404
    assert client.post(f"{base}/networks", json={"name": "bad name"}).status_code == 422

    volume = client.post(f"{base}/volumes", json={"name": f"vol-{label}", "labels": {"devops-test-hosts": label}})
    assert volume.status_code == 201, volume.text
    assert client.get(f"{base}/volumes/vol-{label}").json()["labels"]["devops-test-hosts"] == label
    assert any(v["name"] == f"vol-{label}" for v in client.get(f"{base}/volumes").json()["data"])
    assert client.delete(f"{base}/volumes/vol-{label}").status_code == 204
    assert client.get(f"{base}/volumes/vol-{label}").status_code == 404
    actions = {a["action"] for a in client.get("/docker/activities", params={"host_id": host["id"]}).json()["data"]}
    assert actions >= {"image.build", "image.tag", "image.remove", "network.create", "network.remove",
                       "volume.create", "volume.remove"}


def test_engine_unreachable_answers_502(stack, tmp_path, allow_tmp_sockets):
    client = stack.account().client
    host = make_host(client, endpoint=dead_socket(tmp_path))
    for path in ("/containers?live=true", "/networks", "/volumes", "/images?live=true"):
        response = client.get(f"/docker/hosts/{host['id']}{path}")
        assert response.status_code == 502 and "cannot be reached" in response.json()["detail"], path
    assert client.get(f"/docker/hosts/{host['id']}/containers").json()["count"] == 0  # the synced rows


# ---- registries -----------------------------------------------------------------------------------------


def registry_or_skip() -> None:
    try:
        httpx.get(f"{REGISTRY_URL}/v2/", timeout=5)
    except httpx.HTTPError as exc:
        message = f"no registry answers at {REGISTRY_URL} ({exc}); run scripts/test-services.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_registry_crud_push_list_pull_and_delete_tag(stack, engine, image, label):
    registry_or_skip()
    account = stack.account()
    client = account.client
    assert client.post("/docker/registries", json={"name": "r", "url": "ftp://x"}).status_code == 422
    assert client.post("/docker/registries", json={"name": "r", "url": f"{REGISTRY_URL}/v2"}).status_code == 422
    created = client.post("/docker/registries", json={"name": "local", "url": REGISTRY_URL, "username": "ci",
                                                      "password": "pa55word"})
    assert created.status_code == 201, created.text
    registry = created.json()
    assert registry["password_set"] is True and "password" not in registry
    assert "pa55word" not in client.get(f"/docker/registries/{registry['id']}").text
    tested = client.post(f"/docker/registries/{registry['id']}/test").json()
    assert tested["ok"] is True and tested["api_version"] == "registry/2.0"

    host = make_host(client)
    base = f"/docker/hosts/{host['id']}"
    repository = f"devops-test/pushed-{label}"
    # the engine is shared: only the account's own (built) images may be pushed
    own = f"devops-test/own-{label}:1"
    built = client.post(f"{base}/images/build", params={"tag": own}, content=_context(f"FROM {image}\n"),
                        headers={"Content-Type": "application/x-tar"})
    assert built.status_code == 200, built.text
    assert client.post(f"{base}/images/push", json={"image": image, "registry_id": registry["id"],
                                                    "repository": repository, "tag": "v1"}).status_code == 404
    pushed = client.post(f"{base}/images/push", json={"image": own, "registry_id": registry["id"],
                                                      "repository": repository, "tag": "v1"})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["detail"].startswith("sha256:")
    local_ref = f"127.0.0.1:5000/{repository}:v1"
    try:
        repositories = client.get(f"/docker/registries/{registry['id']}/repositories").json()["repositories"]
        assert repository in repositories
        tags = client.get(f"/docker/registries/{registry['id']}/repositories/{repository}/tags").json()
        assert tags["tags"] == ["v1"]
        engine.images.remove(local_ref)
        pulled = client.post(f"{base}/images/pull", json={"image": repository, "tag": "v1",
                                                          "registry_id": registry["id"]})
        assert pulled.status_code == 200, pulled.text
        assert local_ref in pulled.json()["repo_tags"]
        missing = client.post(f"{base}/images/pull", json={"image": repository, "tag": "nope",
                                                           "registry_id": registry["id"]})
        assert missing.status_code in (404, 502), missing.text
        deleted = client.delete(f"/docker/registries/{registry['id']}/repositories/{repository}/tags/v1")
        assert deleted.status_code == 204, deleted.text
        tags_after = client.get(f"/docker/registries/{registry['id']}/repositories/{repository}/tags")
        assert tags_after.status_code in (200, 404)
        if tags_after.status_code == 200:
            assert "v1" not in (tags_after.json()["tags"] or [])
        assert client.delete(f"/docker/registries/{registry['id']}/repositories/{repository}/tags/v1"
                             ).status_code == 404
    finally:
        for reference in (local_ref, own):
            try:
                engine.images.remove(reference)
            except Exception:  # noqa: BLE001 - already gone
                pass
    actions = [(a["action"], a["result"]) for a in client.get("/docker/activities").json()["data"]]
    assert ("image.push", "success") in actions and ("image.pull", "success") in actions
    assert ("registry.tag.delete", "success") in actions and ("registry.test", "success") in actions
    assert "pa55word" not in str(actions)

    assert client.patch(f"/docker/registries/{registry['id']}", json={"password": None}).json()["password_set"] is False
    assert client.delete(f"/docker/registries/{registry['id']}").status_code == 204
    assert client.get(f"/docker/registries/{registry['id']}").status_code == 404


def test_registry_unreachable_test_says_so(stack):
    client = stack.account().client
    port = _free_port()
    registry = client.post("/docker/registries", json={"name": "gone", "url": f"http://127.0.0.1:{port}"}).json()
    tested = client.post(f"/docker/registries/{registry['id']}/test").json()
    assert tested["ok"] is False and "cannot be reached" in tested["error"]
    assert client.get(f"/docker/registries/{registry['id']}/repositories").status_code == 502


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def test_workflow_pauses_resumes_and_continues_as_new_with_its_state(stack):
    """Driven directly (1 s interval, 2 rounds per run): pause stops rounds, sync_now still runs
    one, resume restarts them, and continue-as-new carries the interval, pause and round count."""
    from workflows.host_sync import HostSyncInput  # noqa: PLC0415

    client = stack.account().client
    host = make_host(client)  # no auto-sync: this test owns host-sync-<id>
    with stack.sessions() as session:
        account_id = session.get(DockerHost, host["id"]).account_id
    workflow_id = f"host-sync-{host['id']}"

    async def start():
        return await stack.temporal.start_workflow(
            HostSyncWorkflow.run, HostSyncInput(host_id=host["id"], account_id=account_id, interval_seconds=1,
                                                rounds_before_continue=2),
            id=workflow_id, task_queue=stack.settings.task_queue)

    handle = stack.infra.run(start())
    first_run = handle.result_run_id

    def state():
        return stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).query(HostSyncWorkflow.state))

    wait_until(lambda: state().total_rounds >= 3)
    assert describe(stack, workflow_id).run_id != first_run  # continued as new after 2 rounds
    stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).signal(HostSyncWorkflow.pause))
    wait_until(lambda: state().paused)
    paused_at = state().total_rounds
    time.sleep(2.5)
    assert state().total_rounds <= paused_at + 1  # at most the round that was running
    paused_at = state().total_rounds
    stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).signal(HostSyncWorkflow.sync_now))
    wait_until(lambda: state().total_rounds == paused_at + 1)
    stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).signal(HostSyncWorkflow.resume))
    wait_until(lambda: state().total_rounds >= paused_at + 4 and not state().paused)
    assert state().interval_seconds == 1
    assert client.delete(f"/docker/hosts/{host['id']}").status_code == 204
    assert describe(stack, workflow_id).status.name == "TERMINATED"
