"""Issue 10 item 2: swarm stacks, swarm services and Docker host containers pass the account's
container policy like templates, and host containers get the hardened defaults.

Compose keys that reach the host (privileged, cap_add, host pid/ipc/network, the host network by
name, devices, bind mounts of ``/`` or the Docker socket, unconfined security profiles, ...) answer
422 naming ``compose.services.<service>.<key>`` and deploy nothing, unless the policy allows exactly
that; a stack deployed through the API carries ``devops.account`` on its services.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from services.container_specs import PolicyView, check_compose
from tests import docker_support

SOCKET = "unix:///var/run/docker.sock"
LABEL = "devops-test-isolation-stacks"

REFUSED = [  # (service definition beyond the image, the loc after ["body", "compose", "services", "web"])
    ({"privileged": True}, ["privileged"]),
    ({"cap_add": ["SYS_ADMIN"]}, ["cap_add", 0]),
    ({"pid": "host"}, ["pid"]),
    ({"ipc": "host"}, ["ipc"]),
    ({"network_mode": "host"}, ["network_mode"]),
    ({"network_mode": "container:other"}, ["network_mode"]),
    ({"networks": ["host"]}, ["networks", "host"]),
    ({"devices": ["/dev/sda:/dev/sda"]}, ["devices"]),
    ({"volumes": ["/:/host"]}, ["volumes", 0]),
    ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, ["volumes", 0]),
    ({"volumes": ["./data:/data"]}, ["volumes", 0]),
    ({"volumes": [{"type": "bind", "source": "/etc", "target": "/x"}]}, ["volumes", 0]),
    ({"security_opt": ["seccomp:unconfined"]}, ["security_opt", 0]),
    ({"security_opt": ["apparmor=unconfined"]}, ["security_opt", 0]),
    ({"security_opt": ["label:disable"]}, ["security_opt", 0]),
    ({"userns_mode": "host"}, ["userns_mode"]),
    ({"cgroup_parent": "/"}, ["cgroup_parent"]),
    ({"env_file": ["/etc/passwd"]}, ["env_file"]),
]


@pytest.mark.parametrize(("extra", "loc"), REFUSED)
def test_compose_keys_reaching_the_host_are_refused_by_name(extra, loc):
    document = {"services": {"web": {"image": "x:1", **extra}}}
    problems = check_compose(document, PolicyView())
    assert [p["loc"] for p in problems] == [["body", "compose", "services", "web", *loc]], problems


def test_the_policy_allows_exactly_what_it_names():
    policy = PolicyView(allow_privileged=True, allow_host_network=True, allowed_capabilities=frozenset({"NET_ADMIN"}),
                        allowed_bind_paths=("/srv/cache",))
    allowed = {"services": {"web": {"image": "x:1", "privileged": True, "network_mode": "host",
                                    "cap_add": ["net_admin"], "volumes": ["/srv/cache/a:/cache", "named:/data"]}}}
    assert check_compose(allowed, policy) == []
    beyond = {"services": {"web": {"image": "x:1", "cap_add": ["SYS_ADMIN"], "volumes": ["/srv:/x"],
                                   "pid": "host", "devices": ["/dev/kvm"]}}}
    assert {tuple(p["loc"][3:]) for p in check_compose(beyond, policy)} == {
        ("web", "cap_add", 0), ("web", "volumes", 0), ("web", "pid"), ("web", "devices")}


def test_disguised_host_access_at_the_top_level_is_refused():
    document = {
        "services": {"web": {"image": "x:1", "networks": ["outside"]}},
        "networks": {"outside": {"external": True, "name": "host"}},
        "volumes": {"root": {"driver": "local", "driver_opts": {"type": "none", "o": "bind", "device": "/"}}},
        "secrets": {"token": {"file": "/var/lib/devops/admin.token"}},
        "configs": {"env": {"environment": "HOME"}},
    }
    locs = {tuple(p["loc"][2:]) for p in check_compose(document, PolicyView())}
    assert locs == {("services", "web", "networks", "outside"), ("volumes", "root", "driver_opts", "device"),
                    ("secrets", "token", "file"), ("configs", "env", "environment")}


# ---- through the API ---------------------------------------------------------------------------------


engine, image = docker_support.engine, docker_support.image  # the shared fixtures
label = docker_support.label_fixture(LABEL, "containers")


def _refused(response, loc: list) -> None:
    assert response.status_code == 422, response.text
    assert loc in [d["loc"] for d in response.json()["detail"]], response.text


@pytest.mark.xdist_group("swarm")
def test_stack_deploy_passes_the_container_policy(stack, engine, image):
    if not engine.info().get("Swarm", {}).get("ControlAvailable"):
        pytest.skip("the engine is not a swarm manager")
    account = stack.account()
    client = account.client
    cluster = client.post("/swarm/clusters", json={"name": uuid.uuid4().hex[:8], "endpoint": SOCKET,
                                                   "auto_sync": False})
    assert cluster.status_code == 201, cluster.text
    base = f"/swarm/clusters/{cluster.json()['id']}"
    name = f"iso{uuid.uuid4().hex[:8]}"
    for extra, loc in REFUSED:
        compose = {"services": {"web": {"image": image, "command": ["sleep", "300"], **extra}}}
        _refused(client.post(f"{base}/stacks", json={"name": name, "compose": yaml.safe_dump(compose)}),
                 ["body", "compose", "services", "web", *loc])
    forged = f"services:\n  web:\n    image: {image}\n    deploy:\n      labels:\n        devops.account: '999'\n"
    _refused(client.post(f"{base}/stacks", json={"name": name, "compose": forged}),
             ["body", "compose", "services", "web", "deploy", "labels", "devops.account"])
    assert client.get(f"{base}/stacks", params={"live": True}).json()["count"] == 0
    assert not engine.services.list(filters={"label": f"com.docker.stack.namespace={name}"})

    # service routes: the host network needs the policy; the owner label cannot be forged
    _refused(client.post(f"{base}/services", json={"name": f"{name}-h", "image": image, "networks": ["host"]}),
             ["body", "networks", 0])
    _refused(client.post(f"{base}/services", json={"name": f"{name}-l", "image": image,
                                                   "labels": {"devops.account": "1"}}),
             ["body", "labels", "devops.account"])
    for extra in ({"mounts": [{"source": "/", "target": "/host"}]}, {"privileged": True}, {"cap_add": ["ALL"]}):
        response = client.post(f"{base}/services", json={"name": f"{name}-x", "image": image, **extra})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][1] == next(iter(extra))

    # a clean stack deploys, and its services carry the account's label
    clean = f"services:\n  web:\n    image: {image}\n    command: [sleep, '300']\n    labels: {{a: b}}\n"
    deployed = client.post(f"{base}/stacks", json={"name": name, "compose": clean})
    try:
        assert deployed.status_code == 201, deployed.text
        assert deployed.json()["compose"] == clean  # the row keeps what the user sent
        service = engine.services.get(f"{name}_web")
        spec = service.attrs["Spec"]
        assert spec["Labels"]["devops.account"] == str(account.id)
        container_labels = spec["TaskTemplate"]["ContainerSpec"]["Labels"]
        assert container_labels["a"] == "b" and container_labels["devops.account"] == str(account.id)
        # another account cannot deploy over it (same stack name on the shared engine)
        other = stack.account().client
        other_cluster = other.post("/swarm/clusters", json={"name": uuid.uuid4().hex[:8], "endpoint": SOCKET,
                                                            "auto_sync": False}).json()["id"]
        taken = other.post(f"/swarm/clusters/{other_cluster}/stacks", json={"name": name, "compose": clean})
        assert taken.status_code == 409, taken.text
        assert other.delete(f"/swarm/clusters/{other_cluster}/stacks/{name}").status_code == 404
        assert engine.services.get(f"{name}_web").attrs["Version"] == service.attrs["Version"]
    finally:
        assert client.delete(f"{base}/stacks/{name}").status_code in (204, 404)

    # the policy allows a capability: exactly that one passes
    assert client.put("/container_policy", json={"allowed_capabilities": ["NET_ADMIN"]}).status_code == 200
    capped = {"services": {"web": {"image": image, "command": ["sleep", "1"], "cap_add": ["NET_ADMIN", "SYS_ADMIN"]}}}
    response = client.post(f"{base}/stacks", json={"name": name, "compose": yaml.safe_dump(capped)})
    assert [d["loc"] for d in response.json()["detail"]] == [["body", "compose", "services", "web", "cap_add", 1]]


def test_host_containers_get_hardened_defaults_and_the_policy(stack, engine, image, label):
    account = stack.account()
    client = account.client
    host = client.post("/docker/hosts", json={"name": uuid.uuid4().hex[:8], "endpoint": SOCKET, "auto_sync": False})
    assert host.status_code == 201, host.text
    base = f"/docker/hosts/{host.json()['id']}/containers"
    for extra, loc in (({"privileged": True}, ["privileged"]), ({"network_mode": "host"}, ["network_mode"]),
                       ({"cap_add": ["SYS_ADMIN"]}, ["cap_add", 0]),
                       ({"bind_mounts": [{"source": "/", "target": "/host"}]}, ["bind_mounts", 0, "source"]),
                       ({"bind_mounts": [{"source": "/var/run/docker.sock", "target": "/s"}]},
                        ["bind_mounts", 0, "source"]),
                       ({"labels": {"devops.account": "1"}}, ["labels", "devops.account"])):
        _refused(client.post(base, json={"image": image, **extra, "labels": {**extra.get("labels", {}), LABEL: label}}),
                 ["body", *loc])
    assert not engine.containers.list(all=True, filters={"label": f"{LABEL}={label}"})

    made = client.post(base, json={"image": image, "command": ["sh", "-c", "id -u; sleep 30"], "start": True,
                                   "labels": {LABEL: label}})
    assert made.status_code == 201, made.text
    attrs = engine.containers.get(made.json()["container_id"]).attrs
    config, host_config = attrs["Config"], attrs["HostConfig"]
    assert config["User"] == "65534:65534" and config["Labels"]["devops.account"] == str(account.id)
    assert host_config["CapDrop"] == ["ALL"] and "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["ReadonlyRootfs"] is True and host_config["NetworkMode"] == "none"
    assert host_config["Privileged"] is False and not host_config.get("Binds")
    assert host_config["Memory"] == 256 * 1024 * 1024 and host_config["PidsLimit"] == 128
    assert host_config["NanoCpus"] == 1_000_000_000

    # what the policy allows, the request may ask for
    assert client.put("/container_policy", json={"allowed_capabilities": ["NET_BIND_SERVICE"]}).status_code == 200
    allowed = client.post(base, json={"image": image, "command": ["true"], "cap_add": ["net_bind_service"],
                                      "network_mode": "bridge", "user": "1000", "read_only_rootfs": False,
                                      "labels": {LABEL: label}})
    assert allowed.status_code == 201, allowed.text
    attrs = engine.containers.get(allowed.json()["container_id"]).attrs
    assert attrs["HostConfig"]["CapAdd"] == ["NET_BIND_SERVICE"] and attrs["HostConfig"]["NetworkMode"] == "bridge"
    assert attrs["Config"]["User"] == "1000" and attrs["HostConfig"]["ReadonlyRootfs"] is False
