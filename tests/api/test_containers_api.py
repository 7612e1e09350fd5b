"""The containers API: templates (safe by default, unsafe options only with the account's policy,
every 422 naming its field), the admin-only policy and quota, the atomic quota reservation under a
burst of 50 launches, queueing, cancel, artifacts, account isolation and roles. On SQLite and
PostgreSQL. The assertions are about the API's answers and the rows it wrote, never about the
container actually running (that belongs to the workflow's own tests)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from activities.container_quota import HOLDING_STATUSES
from activities.containers import container_name
from api.auth import issue_token
from api.routes.containers import _callback_problem
from db.models import Artifact, ContainerEvent, ContainerInstance, User
from services.container_specs import PolicyView, check_spec, resolve_spec
from tests.docker_support import busybox_image, docker_or_skip

IMAGE = "devops-test/busybox:latest"  # syntax only: the API never pulls


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    made: list[httpx.Client] = []
    yield made
    for client in made:
        client.close()


def same_account_client(stack, account, role: str, clients: list[httpx.Client]) -> httpx.Client:
    """Another user of ``account`` with ``role`` and its own token."""
    with stack.sessions.begin() as session:
        user = User(account_id=account.id, email=f"{uuid.uuid4().hex[:8]}@example.test", role=role)
        session.add(user)
        session.flush()
        token = issue_token(session, user, role).token
    client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {token}"},
                          timeout=90)
    clients.append(client)
    return client


def create_template(client, **fields) -> dict:
    body = {"name": fields.pop("name", f"tpl-{uuid.uuid4().hex[:6]}"), "image": IMAGE, **fields}
    response = client.post("/container_templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def locs(response: httpx.Response) -> list[list]:
    assert response.status_code == 422, response.text
    return [err["loc"] for err in response.json()["detail"]]


def messages(response: httpx.Response) -> str:
    return " | ".join(err["msg"] for err in response.json()["detail"])


def holding(stack, account_id: int) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count(ContainerInstance.id)).where(
            ContainerInstance.account_id == account_id, ContainerInstance.status.in_(HOLDING_STATUSES)))


def cancel_all(client, ids) -> None:
    for instance_id in ids:
        client.post(f"/containers/{instance_id}/cancel")


# ---- templates --------------------------------------------------------------------------------


def test_templates_are_safe_by_default_and_created_listed_shown_updated_and_deleted(stack):
    client = stack.account().client
    tpl = create_template(client, name="unit", command=["sh", "-c", "echo hi"], env={"CI": "true"})
    assert tpl["privileged"] is False and tpl["cap_add"] == [] and tpl["bind_mounts"] == []
    assert tpl["network_mode"] == "none" and tpl["read_only_rootfs"] is True
    assert tpl["user"] == "65534:65534" and tpl["pids_limit"] == 128 and tpl["memory_mb"] == 256
    assert tpl["working_dir"] == "/work"

    other = create_template(client, name="another", user=None)  # the image's own user
    assert other["user"] is None
    listed = client.get("/container_templates").json()
    assert listed["count"] == 2 and [t["name"] for t in listed["data"]] == ["another", "unit"]
    assert client.get(f"/container_templates/{tpl['id']}").json() == tpl

    patched = client.patch(f"/container_templates/{tpl['id']}", json={"memory_mb": 512, "env": {"A": "1"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["memory_mb"] == 512 and patched.json()["env"] == {"A": "1"}
    assert client.patch(f"/container_templates/{tpl['id']}", json={"name": "another"}).status_code == 409
    assert client.post("/container_templates", json={"name": "unit", "image": IMAGE}).status_code == 409
    assert locs(client.patch(f"/container_templates/{tpl['id']}", json={"image": None})) == [["body", "image"]]

    assert client.delete(f"/container_templates/{tpl['id']}").status_code == 204
    assert client.get(f"/container_templates/{tpl['id']}").status_code == 404
    assert client.get("/container_templates").json()["count"] == 1


UNSAFE = [
    ({"privileged": True}, ["body", "privileged"], {"allow_privileged": True}),
    ({"network_mode": "host"}, ["body", "network_mode"], {"allow_host_network": True}),
    ({"cap_add": ["NET_ADMIN"]}, ["body", "cap_add", 0], {"allowed_capabilities": ["cap_net_admin"]}),
    ({"bind_mounts": [{"source": "/srv/cache/app", "target": "/cache"}]}, ["body", "bind_mounts", 0, "source"],
     {"allowed_bind_paths": ["/srv/cache"]}),
]


@pytest.mark.parametrize(("fields", "loc", "allow"), UNSAFE, ids=["privileged", "host-network", "cap_add", "bind"])
def test_unsafe_options_are_refused_until_an_account_admin_allows_them(stack, clients, fields, loc, allow):
    admin = stack.account()
    refused = admin.client.post("/container_templates", json={"name": "x", "image": IMAGE, **fields})
    assert locs(refused) == [loc]
    assert "an account admin must allow it via PUT /container_policy" in messages(refused)

    member = same_account_client(stack, admin, "member", clients)
    assert member.put("/container_policy", json=allow).status_code == 403
    policy = admin.client.put("/container_policy", json=allow)
    assert policy.status_code == 200, policy.text
    assert member.get("/container_policy").json() == policy.json()

    tpl = create_template(member, **fields)
    assert tpl[loc[1]] not in (False, "none", [])
    if "cap_add" in fields:
        assert tpl["cap_add"] == ["NET_ADMIN"]
    # Withdrawing the permission applies to the next save and the next launch.
    admin.client.put("/container_policy", json={key: False if isinstance(value, bool) else []
                                                for key, value in allow.items()})
    assert locs(member.patch(f"/container_templates/{tpl['id']}", json={"memory_mb": 300})) == [loc]
    assert locs(member.post("/containers", json={"template_id": tpl["id"]})) == [loc]


def test_only_the_allowed_capability_and_bind_paths_pass(stack):
    client = stack.account().client
    assert client.put("/container_policy", json={"allowed_capabilities": ["NET_BIND_SERVICE"],
                                                 "allowed_bind_paths": ["/srv/cache"]}).status_code == 200
    assert locs(client.post("/container_templates", json={
        "name": "x", "image": IMAGE, "cap_add": ["NET_BIND_SERVICE", "SYS_ADMIN"]})) == [["body", "cap_add", 1]]
    for source in ("/srv/cache/../../etc", "/srv/cachex", "/etc", "relative/path"):
        response = client.post("/container_templates", json={
            "name": "x", "image": IMAGE, "bind_mounts": [{"source": source, "target": "/data"}]})
        assert locs(response) == [["body", "bind_mounts", 0, "source"]], source
    tpl = create_template(client, bind_mounts=[{"source": "/srv/cache/./a", "target": "/data"}])
    assert tpl["bind_mounts"] == [{"source": "/srv/cache/a", "target": "/data", "read_only": True}]
    assert locs(client.put("/container_policy", json={"allowed_bind_paths": ["/srv/../etc"]})) == [
        ["body", "allowed_bind_paths", 0]]


BAD_FIELDS = [
    ({"cpu_limit": 0.05}, ["body", "cpu_limit"]),
    ({"cpu_limit": 17}, ["body", "cpu_limit"]),
    ({"memory_mb": 8}, ["body", "memory_mb"]),
    ({"memory_mb": 70000}, ["body", "memory_mb"]),
    ({"pids_limit": 8}, ["body", "pids_limit"]),
    ({"pids_limit": 5000}, ["body", "pids_limit"]),
    ({"storage_mb": 200000}, ["body", "storage_mb"]),
    ({"timeout_seconds": 0}, ["body", "timeout_seconds"]),
    ({"timeout_seconds": 86401}, ["body", "timeout_seconds"]),
    ({"env": {"1BAD": "x"}}, ["body", "env", "1BAD"]),
    ({"env": {"HAS-DASH": "x"}}, ["body", "env", "HAS-DASH"]),
    ({"secret_env": {"TOKEN": "NO_SUCH_SECRET"}}, ["body", "secret_env", "TOKEN"]),
    ({"secret_env": {"bad name": "DEPLOY_TOKEN"}}, ["body", "secret_env", "bad name"]),
    ({"artifact_paths": ["out/report.txt"]}, ["body", "artifact_paths", 0]),
    ({"artifact_paths": ["/work/../etc/passwd"]}, ["body", "artifact_paths", 0]),
    ({"image": "UPPER/Case:1"}, ["body", "image"]),
    ({"image": "busybox:bad tag"}, ["body", "image"]),
    ({"labels": {"devops.instance": "1"}}, ["body", "labels", "devops.instance"]),
    ({"working_dir": "work"}, ["body", "working_dir"]),
    ({"user": "root; rm"}, ["body", "user"]),
    ({"network_mode": "container:x"}, ["body", "network_mode"]),
]


def test_every_bad_field_is_a_422_naming_it_and_saves_nothing(stack):
    client = stack.account().client
    assert client.put("/secrets", json={"name": "DEPLOY_TOKEN", "value": "s3cr3t-value"}).status_code == 200
    for fields, loc in BAD_FIELDS:
        response = client.post("/container_templates", json={"name": "x", "image": IMAGE, **fields})
        assert loc in locs(response), (fields, response.text)
        launched = client.post("/containers", json={"image": IMAGE, **fields})
        assert loc in locs(launched), (fields, launched.text)
    unknown = client.post("/container_templates", json={"name": "x", "image": IMAGE,
                                                         "secret_env": {"TOKEN": "NO_SUCH_SECRET"}})
    assert "no secret named 'NO_SUCH_SECRET'" in messages(unknown)
    assert client.get("/container_templates").json()["count"] == 0
    assert client.get("/containers").json()["count"] == 0
    tpl = create_template(client, secret_env={"TOKEN": "DEPLOY_TOKEN"}, image="registry.local:5000/team/app:1.2",
                          labels={"team": "ci"}, artifact_paths=["/work/out"])
    assert tpl["secret_env"] == {"TOKEN": "DEPLOY_TOKEN"}


def test_check_spec_is_pure_and_lists_every_problem():
    spec = resolve_spec({"image": IMAGE, "env": {"A": "1"}}, {"env": {"B": "2"}, "privileged": True,
                                                             "memory_mb": 1})
    assert spec["env"] == {"A": "1", "B": "2"}
    problems = check_spec(spec, PolicyView(), set())
    assert sorted(p["loc"][-1] for p in problems) == ["memory_mb", "privileged"]
    assert check_spec(spec | {"memory_mb": 64}, PolicyView(allow_privileged=True), set()) == []
    assert check_spec(resolve_spec(None, {}), PolicyView(), set())[0]["loc"] == ["body", "image"]
    digest = "sha256:" + "a" * 64
    assert check_spec(resolve_spec(None, {"image": f"busybox@{digest}"}), PolicyView(), set()) == []


# ---- policy and quota ---------------------------------------------------------------------------


def test_quota_view_and_only_admins_change_policy_and_quota(stack, clients):
    admin = stack.account()
    quota = admin.client.get("/container_quotas").json()
    assert quota == {"limits": {"max_concurrent": 5, "max_cpu": 4.0, "max_memory_mb": 4096, "max_storage_mb": 10240,
                                "max_duration_seconds": 3600},
                     "usage": {"concurrent": 0, "cpu": 0.0, "memory_mb": 0, "storage_mb": 0}, "queued": 0}
    member = same_account_client(stack, admin, "member", clients)
    viewer = same_account_client(stack, admin, "viewer", clients)
    for client in (member, viewer):
        assert client.put("/container_quotas", json={"max_concurrent": 50}).status_code == 403
        assert client.put("/container_policy", json={"allow_privileged": True}).status_code == 403
        assert client.get("/container_quotas").json() == quota
    changed = admin.client.put("/container_quotas", json={"max_concurrent": 7, "max_cpu": 2.5})
    assert changed.status_code == 200, changed.text
    assert changed.json()["limits"]["max_concurrent"] == 7 and changed.json()["limits"]["max_cpu"] == 2.5
    assert changed.json()["limits"]["max_memory_mb"] == 4096
    assert locs(admin.client.put("/container_quotas", json={"max_concurrent": -1})) == [["body", "max_concurrent"]]
    assert locs(admin.client.put("/container_quotas", json={"max_concurrent": None})) == [["body", "max_concurrent"]]
    assert viewer.get("/container_policy").json()["allow_privileged"] is False


def test_a_launch_larger_than_the_quota_itself_is_a_422(stack):
    client = stack.account().client
    client.put("/container_quotas", json={"max_duration_seconds": 60, "max_cpu": 1})
    response = client.post("/containers", json={"image": IMAGE, "timeout_seconds": 120, "cpu_limit": 2})
    assert sorted(locs(response)) == [["body", "cpu_limit"], ["body", "timeout_seconds"]]
    assert client.get("/containers").json()["count"] == 0


# ---- launches -----------------------------------------------------------------------------------


def test_fifty_concurrent_launches_against_a_limit_of_five_start_exactly_five(stack):
    image = busybox_image(docker_or_skip())
    account = stack.account()
    assert account.client.put("/container_quotas", json={
        "max_concurrent": 5, "max_cpu": 16, "max_memory_mb": 65536, "max_storage_mb": 102400}).status_code == 200
    barrier = threading.Barrier(50)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def launch() -> None:
        with httpx.Client(base_url=f"{stack.url}/api/v1/devops", timeout=120,
                          headers={"Authorization": f"Bearer {account.token}"}) as client:
            barrier.wait()
            response = client.post("/containers", json={"image": image, "command": ["sleep", "30"],
                                                        "cpu_limit": 0.1, "memory_mb": 32, "timeout_seconds": 120})
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=launch) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    started = [r.json() for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code == 429]
    try:
        assert len(answers) == 50
        assert len(started) == 5, [(r.status_code, r.text[:200]) for r in answers if r.status_code not in (201, 429)]
        assert len(refused) == 45
        assert all("5 of 5 concurrent containers are running" in r.json()["detail"] for r in refused)
        assert all(body["status"] in HOLDING_STATUSES + ("completed", "failed", "cancelled", "timeout")
                   for body in started)
        assert {body["name"] for body in started} == {container_name(body["id"], stack.settings) for body in started}
        assert {body["workflow_id"] for body in started} == {f"container-{body['id']}" for body in started}
        with stack.sessions() as session:
            rows = session.scalars(select(ContainerInstance).where(
                ContainerInstance.account_id == account.id)).all()
        assert sorted(r.id for r in rows) == sorted(body["id"] for body in started)  # the 45 kept nothing
        assert holding(stack, account.id) <= 5
        view = account.client.get("/container_quotas").json()
        assert view["usage"]["concurrent"] == holding(stack, account.id) and view["queued"] == 0
    finally:
        cancel_all(account.client, [body["id"] for body in started])


def test_over_quota_is_429_or_queued_on_request_and_a_queued_one_cancels_at_once(stack):
    client = stack.account().client
    client.put("/container_quotas", json={"max_concurrent": 0})
    refused = client.post("/containers", json={"image": IMAGE})
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("0 of 0 concurrent containers are running")
    assert client.get("/containers").json()["count"] == 0

    queued = client.post("/containers", json={"image": IMAGE, "command": ["sleep", "30"], "queue": True})
    assert queued.status_code == 201, queued.text
    body = queued.json()
    assert body["status"] == "queued" and body["workflow_id"] == f"container-{body['id']}"
    assert body["temporal_ui_url"].endswith(f"/workflows/container-{body['id']}")
    assert [e["event_type"] for e in body["events"]] == ["created"]
    assert "0 of 0 concurrent" in body["events"][0]["payload"]["reason"]
    view = client.get("/container_quotas").json()
    assert view["queued"] == 1 and view["usage"]["concurrent"] == 0

    cancelled = client.post(f"/containers/{body['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert client.get(f"/containers/{body['id']}").json()["status"] == "cancelled"
    assert client.post(f"/containers/{body['id']}/cancel").status_code == 409
    assert client.get("/container_quotas").json()["queued"] == 0
    assert [c["id"] for c in client.get("/containers", params={"status": "cancelled"}).json()["data"]] == [body["id"]]


def test_a_launch_resolves_template_and_overrides_and_never_shows_secret_values(stack):
    image = busybox_image(docker_or_skip())
    client = stack.account().client
    client.put("/secrets", json={"name": "DEPLOY_TOKEN", "value": "v3ry-s3cret-value"})
    tpl = create_template(client, image=image, command=["sleep", "30"], env={"A": "1"}, cpu_limit=0.5,
                          secret_env={"TOKEN": "DEPLOY_TOKEN"}, artifact_paths=["/work/out"])
    response = client.post("/containers", json={"template_id": tpl["id"], "env": {"B": "2"}, "memory_mb": 64,
                                                "callback_url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 201, response.text
    body = response.json()
    try:
        spec = body["spec"]
        assert spec["image"] == image and spec["command"] == ["sleep", "30"]
        assert spec["env"] == {"A": "1", "B": "2"} and spec["secret_env"] == {"TOKEN": "DEPLOY_TOKEN"}
        assert spec["cap_drop"] == ["ALL"] and spec["no_new_privileges"] is True and spec["privileged"] is False
        assert spec["user"] == "65534:65534" and spec["read_only_rootfs"] is True
        assert spec["template_id"] == tpl["id"] and body["template_id"] == tpl["id"]
        assert (body["reserved_cpu"], body["reserved_memory_mb"], body["reserved_storage_mb"]) == (0.5, 64, 512)
        assert body["callback_url"] == "http://127.0.0.1:9/hook" and body["created_by_user_id"] is not None
        assert "v3ry-s3cret-value" not in response.text
        assert "v3ry-s3cret-value" not in client.get(f"/containers/{body['id']}").text
        listed = client.get("/containers").json()
        assert listed["count"] == 1 and listed["data"][0]["id"] == body["id"] and "logs" not in listed["data"][0]
        assert client.get("/container_quotas").json()["usage"]["memory_mb"] in (0, 64)  # 0 once it has ended
        assert locs(client.post("/containers", json={"template_id": 999999})) == [["body", "template_id"]]
        assert locs(client.post("/containers", json={"command": ["true"]})) == [["body", "image"]]
        assert locs(client.post("/containers", json={"image": IMAGE, "callback_url": "ftp://x/y"})) == [
            ["body", "callback_url"]]
    finally:
        cancel_all(client, [body["id"]])


def test_callback_targets_inside_the_network_are_refused_unless_allowed():
    assert "loopback, private or link-local" in _callback_problem("http://127.0.0.1:8000/hook", False)
    assert "loopback, private or link-local" in _callback_problem("https://10.1.2.3/hook", False)
    assert _callback_problem("http://127.0.0.1:8000/hook", True) is None
    assert _callback_problem("file:///etc/passwd", True) == "must be an http(s) URL"


def test_newest_first_listing_and_artifacts_download(stack):
    account = stack.account()
    client = account.client
    client.put("/container_quotas", json={"max_concurrent": 0})
    ids = [client.post("/containers", json={"image": IMAGE, "queue": True}).json()["id"] for _ in range(3)]
    listed = client.get("/containers", params={"limit": 2}).json()
    assert listed["count"] == 3 and [c["id"] for c in listed["data"]] == ids[::-1][:2]
    assert [c["id"] for c in client.get("/containers", params={"offset": 2}).json()["data"]] == [ids[0]]

    store = stack.settings.resolved_artifact_dir
    key = f"test/{uuid.uuid4().hex}.tar"
    (store / key).parent.mkdir(parents=True, exist_ok=True)
    (store / key).write_bytes(b"tar bytes")
    with stack.sessions.begin() as session:
        artifact = Artifact(account_id=account.id, instance_id=ids[0], name="out", store_key=key, size_bytes=9)
        session.add(artifact)
        session.add(ContainerEvent(account_id=account.id, instance_id=ids[0], event_type="provisioning"))
        session.flush()
        artifact_id = artifact.id
    shown = client.get(f"/containers/{ids[0]}").json()
    assert [a["id"] for a in shown["artifacts"]] == [artifact_id]
    assert [e["event_type"] for e in shown["events"]] == ["created", "provisioning"]
    download = client.get(f"/containers/{ids[0]}/artifacts/{artifact_id}")
    assert download.status_code == 200 and download.content == b"tar bytes"
    assert download.headers["content-type"] == "application/x-tar"
    assert client.get(f"/containers/{ids[1]}/artifacts/{artifact_id}").status_code == 404
    cancel_all(client, ids)


# ---- isolation and roles ------------------------------------------------------------------------


def test_another_accounts_ids_answer_404_everywhere(stack):
    owner = stack.account()
    tpl = create_template(owner.client)
    owner.client.put("/container_quotas", json={"max_concurrent": 0})
    instance = owner.client.post("/containers", json={"image": IMAGE, "queue": True}).json()
    with stack.sessions.begin() as session:
        artifact = Artifact(account_id=owner.id, instance_id=instance["id"], name="x", store_key="none.tar")
        session.add(artifact)
        session.flush()
        artifact_id = artifact.id
    stranger = stack.account().client
    for method, path, body in [
        ("GET", f"/container_templates/{tpl['id']}", None),
        ("PATCH", f"/container_templates/{tpl['id']}", {"memory_mb": 64}),
        ("DELETE", f"/container_templates/{tpl['id']}", None),
        ("GET", f"/containers/{instance['id']}", None),
        ("POST", f"/containers/{instance['id']}/cancel", None),
        ("GET", f"/containers/{instance['id']}/artifacts/{artifact_id}", None),
    ]:
        response = stranger.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert locs(stranger.post("/containers", json={"template_id": tpl["id"]})) == [["body", "template_id"]]
    assert stranger.get("/containers").json()["count"] == 0
    assert stranger.get("/container_templates").json()["count"] == 0
    assert owner.client.get(f"/containers/{instance['id']}").json()["status"] == "queued"
    cancel_all(owner.client, [instance["id"]])


def test_a_viewer_reads_but_gets_403_on_every_write(stack, clients):
    owner = stack.account()
    tpl = create_template(owner.client)
    owner.client.put("/container_quotas", json={"max_concurrent": 0})
    instance = owner.client.post("/containers", json={"image": IMAGE, "queue": True}).json()
    viewer = same_account_client(stack, owner, "viewer", clients)
    assert viewer.get(f"/container_templates/{tpl['id']}").status_code == 200
    assert viewer.get(f"/containers/{instance['id']}").status_code == 200
    for method, path, body in [
        ("POST", "/container_templates", {"name": "v", "image": IMAGE}),
        ("PATCH", f"/container_templates/{tpl['id']}", {"memory_mb": 64}),
        ("DELETE", f"/container_templates/{tpl['id']}", None),
        ("POST", "/containers", {"image": IMAGE, "queue": True}),
        ("POST", f"/containers/{instance['id']}/cancel", None),
    ]:
        assert viewer.request(method, path, json=body).status_code == 403, (method, path)
    cancel_all(owner.client, [instance["id"]])
