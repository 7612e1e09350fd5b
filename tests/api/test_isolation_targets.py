"""Issue 10 item 5 at the API: with private targets off, image references to registries on
loopback, private or link-local addresses, a literal local/internal ``with.repository`` of a
checkout step, and ``PATCH /users/me`` ``notify_url`` to an internal address answer 422 naming
the field, and nothing is stored; with them on, the same requests are accepted.

The test stack runs with private targets allowed (its fakes and registry listen on 127.0.0.1):
these tests switch the very settings object the running API reads, and always switch it back."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import httpx
import pytest

SOCKET = "unix:///var/run/docker.sock"
HINT = "DEVOPS_ALLOW_PRIVATE_TARGETS=true"
PRIVATE_IMAGES = ["127.0.0.1:5000/app:1", "localhost:5000/app", "10.0.0.5/app", "169.254.169.254/x",
                  "[::1]:5000/app"]


@contextlib.contextmanager
def private_targets_off(stack) -> Iterator[None]:
    settings = stack.settings
    before = (settings.notify_allow_private_targets, settings.allow_private_targets)
    settings.notify_allow_private_targets = False  # the running API reads this very object
    settings.allow_private_targets = False
    try:
        assert not settings.private_targets_allowed
        yield
    finally:
        settings.notify_allow_private_targets, settings.allow_private_targets = before


def refused(response: httpx.Response, loc: list, *, hint: bool = True) -> str:
    """The 422's message for ``loc`` (asserting there is one)."""
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    messages = [d["msg"] for d in details if d["loc"] == ["body", *loc]]
    assert messages, details
    if hint:
        assert HINT in messages[0], messages[0]
    return messages[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- users/me notify_url -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "https://10.1.2.3/hook", "http://169.254.169.254/",
                                 "http://[::1]:9/", "http://localhost/hook", "http://100.100.100.200/"])
def test_notify_url_to_an_internal_address_is_422_and_not_stored(stack, url):
    client = stack.account().client
    assert client.patch("/users/me", json={"notify_url": "https://93.184.216.34/me"}).status_code == 200
    with private_targets_off(stack):
        response = client.patch("/users/me", json={"notify_url": url})
        refused(response, ["notify_url"])
        # a public address is still fine with the setting off
        assert client.patch("/users/me", json={"notify_url": "https://93.184.216.34/other"}).status_code == 200
    assert client.get("/users/me").json()["notify_url"] == "https://93.184.216.34/other"
    # allowed by the operator: accepted
    response = client.patch("/users/me", json={"notify_url": url})
    assert response.status_code == 200, response.text
    assert client.get("/users/me").json()["notify_url"] == url


def test_notify_url_must_be_http_whatever_the_setting(stack):
    client = stack.account().client
    for url in ("file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x"):
        assert client.patch("/users/me", json={"notify_url": url}).status_code == 422, url
    assert client.get("/users/me").json()["notify_url"] is None


# ---- container templates and launches --------------------------------------------------------


@pytest.mark.parametrize("image", PRIVATE_IMAGES)
def test_container_template_with_a_private_registry_image_is_422_unless_allowed(stack, image):
    client = stack.account().client
    name = unique("tpl")
    with private_targets_off(stack):
        response = client.post("/container_templates", json={"name": name, "image": image})
        if image.startswith("["):  # not a valid reference anyway: still 422 on image
            refused(response, ["image"], hint=False)
        else:
            refused(response, ["image"])
    assert client.get("/container_templates").json()["count"] == 0
    if not image.startswith("["):
        response = client.post("/container_templates", json={"name": name, "image": image})
        assert response.status_code == 201, response.text


def test_changing_a_template_to_a_private_registry_image_is_422(stack):
    client = stack.account().client
    template = client.post("/container_templates", json={"name": unique("tpl"), "image": "local/busybox:latest"})
    assert template.status_code == 201, template.text
    tid = template.json()["id"]
    with private_targets_off(stack):
        refused(client.patch(f"/container_templates/{tid}", json={"image": "10.0.0.5:5000/app"}), ["image"])
    assert client.get(f"/container_templates/{tid}").json()["image"] == "local/busybox:latest"


def test_container_launch_with_a_private_registry_image_is_422_and_starts_nothing(stack):
    client = stack.account().client
    with private_targets_off(stack):
        response = client.post("/containers", json={"image": "localhost:5000/app:1", "command": ["true"]})
        refused(response, ["image"])
    assert client.get("/containers").json()["count"] == 0


# ---- pipelines: checkout repository and step images ------------------------------------------


def pipeline(steps: list[dict]) -> dict:
    return {"name": unique("p"), "steps": steps}


@pytest.mark.parametrize(
    "repository",
    ["/srv/repo.git", "../x", "file:///srv/repo.git", "http://127.0.0.1/x.git", "https://[::1]/x.git",
     "http://169.254.169.254/x.git", "https://localhost/x.git", "git@10.0.0.1:team/app.git"],
)
def test_checkout_of_a_literal_local_or_internal_repository_is_422_at_save(stack, repository):
    client = stack.account().client
    document = pipeline([{"id": "co", "type": "checkout", "with": {"repository": repository}}])
    with private_targets_off(stack):
        refused(client.post("/pipelines", json=document), ["steps", 0, "with", "repository"])
    assert client.get("/pipelines").json()["count"] == 0
    response = client.post("/pipelines", json=document)
    assert response.status_code == 201, response.text


def test_checkout_repository_from_an_expression_or_a_public_url_is_left_to_run_time(stack):
    client = stack.account().client
    document = pipeline([
        {"id": "a", "type": "checkout", "with": {"repository": "${{ inputs.repo }}"}},
        {"id": "b", "type": "checkout", "with": {"repository": "https://git.example.com/team/app.git"}},
    ])
    document["inputs"] = {"repo": {"type": "string", "default": "https://git.example.com/x.git"}}
    with private_targets_off(stack):
        response = client.post("/pipelines", json=document)
    assert response.status_code == 201, response.text


def test_remote_helpers_in_checkout_are_422_even_when_allowed(stack):
    client = stack.account().client
    document = pipeline([{"id": "co", "type": "checkout", "with": {"repository": "ext::sh -c id"}}])
    refused(client.post("/pipelines", json=document), ["steps", 0, "with", "repository"], hint=False)


def test_docker_step_image_from_a_private_registry_is_422_at_save(stack):
    client = stack.account().client
    document = pipeline([{"id": "t", "type": "run_tests",
                          "with": {"executor": "docker", "image": "127.0.0.1:5000/ci:1", "command": "true"}}])
    with private_targets_off(stack):
        refused(client.post("/pipelines", json=document), ["steps", 0, "with", "image"])
    assert client.get("/pipelines").json()["count"] == 0
    assert client.post("/pipelines", json=document).status_code == 201


# ---- swarm, deployments, docker hosts, registries ----------------------------------------------


def test_swarm_services_stacks_and_deployments_refuse_private_registry_images(stack):
    client = stack.account().client
    cluster = client.post("/swarm/clusters", json={"name": unique("swarm"), "endpoint": SOCKET, "auto_sync": False})
    assert cluster.status_code == 201, cluster.text
    cid = cluster.json()["id"]
    name = unique("svc")
    compose = "services:\n  web:\n    image: 10.0.0.5:5000/web:1\n  ok:\n    image: local/busybox:latest\n"
    with private_targets_off(stack):
        refused(client.post(f"/swarm/clusters/{cid}/services", json={"name": name, "image": "127.0.0.1:5000/web"}),
                ["image"])
        refused(client.patch(f"/swarm/clusters/{cid}/services/{name}", json={"image": "169.254.169.254/web"}),
                ["image"])
        refused(client.post(f"/swarm/clusters/{cid}/stacks", json={"name": unique("stk"), "compose": compose}),
                ["compose", "services", "web", "image"])
        refused(client.post("/swarm/deployments", json={"cluster_id": cid, "service": name,
                                                         "image": "localhost:5000/web:2", "strategy": "rolling"}),
                ["image"])
    services = client.get(f"/swarm/clusters/{cid}/services").json()
    assert name not in [s.get("name") for s in services["data"]]
    assert client.get(f"/swarm/clusters/{cid}/stacks").json()["count"] == 0
    assert client.get("/swarm/deployments").json()["count"] == 0


def test_docker_host_create_pull_and_registries_refuse_private_registries(stack):
    client = stack.account().client
    host = client.post("/docker/hosts", json={"name": unique("host"), "endpoint": SOCKET, "auto_sync": False})
    assert host.status_code == 201, host.text
    hid = host.json()["id"]
    with private_targets_off(stack):
        refused(client.post(f"/docker/hosts/{hid}/containers", json={"image": "127.0.0.1:5000/app:1"}), ["image"])
        refused(client.post(f"/docker/hosts/{hid}/images/pull", json={"image": "10.0.0.5:5000/app", "tag": "1"}),
                ["image"])
        refused(client.post("/docker/registries", json={"name": unique("reg"), "url": "http://127.0.0.1:5000"}),
                ["url"])
    assert client.get("/docker/registries").json()["count"] == 0
    # allowed: the registry is saved, and a pull through it passes the check (then meets the engine)
    registry = client.post("/docker/registries", json={"name": unique("reg"), "url": "http://127.0.0.1:5000"})
    assert registry.status_code == 201, registry.text
    with private_targets_off(stack):
        response = client.post(f"/docker/hosts/{hid}/images/pull",
                               json={"image": "team/app", "tag": "1", "registry_id": registry.json()["id"]})
        refused(response, ["registry_id"])
