"""``devops deploy`` and ``devops hosts`` against the live stack and the local Docker engine in a
single-node swarm: a canary paused at weight 50 is shown (human and ``--json``), refuses pause and
resume (a ``pause: {}`` step waits for promote), and is promoted to completed; a second canary is
aborted; control of an ended or unknown rollout exits 1 with the API's message. ``hosts list`` and
``hosts show`` show a Docker host registered through the API, with its status before and after a
sync.

SQLite only, as tests/ui/test_ui_ops.py: what is tested is the CLI side. The module makes swarm
services, so it runs in the ``swarm`` xdist group (one worker runs the group in order) and removes
what it makes."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import Result

from tests.docker_support import busybox_image as make_image
from tests.docker_support import docker_or_skip
from tests.harness import wait_for

pytestmark = [pytest.mark.parametrize("database_url", ["sqlite"], indirect=True), pytest.mark.xdist_group("swarm")]

SOCKET = "unix:///var/run/docker.sock"
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
CANARY_STEPS = [{"set_weight": 50}, {"pause": {}}]
REASON = "wrong build [/oops] [bold]v2[/]"  # looks like rich markup
FINISHED = ("completed", "aborted", "failed", "rolled_back")


def ok(response, *codes: int) -> dict:
    assert response.status_code in (codes or (200, 201)), (response.request.method, response.request.url,
                                                          response.status_code, response.text)
    return response.json() if response.content else {}


@pytest.fixture(scope="module")
def engine():
    client = docker_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="module")
def swarm(engine):
    if (engine.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        pytest.skip("the engine is not in a swarm (scripts/test-services.sh runs `docker swarm init`)")
    return engine


def field_lines(text: str) -> dict[str, str]:
    """``name  value`` lines of a ``show``/``status`` command, as a dict."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(\S+(?: \S+)?)\s{2,}(.*)$", line.rstrip())
        if match:
            found.setdefault(match[1], match[2])
    return found


@contextmanager
def swarm_service(acct, engine, marker: str) -> Iterator[tuple[dict, str, str]]:
    """A cluster on the local engine and a running one-replica service of busybox v1 on it (made
    through the API): ``(cluster, service, v2 image)``. Afterwards the services are removed (the
    canary too) and the cluster deleted."""
    service = f"cli-svc-{marker}"
    v1 = make_image(engine)
    v2 = make_image(engine, changes=["ENV DEVOPS_CLI_TEST=2"])
    cluster = ok(acct.client.post("/swarm/clusters", json={"name": f"cli-swarm-{marker}", "endpoint": SOCKET,
                                                           "auto_sync": False}), 201)
    try:
        ok(acct.client.post(f"/swarm/clusters/{cluster['id']}/services", json={
            "name": service, "image": v1, "command": SLEEPER, "replicas": 1}), 201)
        wait_for(lambda: any(t["Status"]["State"] == "running" for t in engine.services.get(service).tasks()),
                 timeout=60, interval=0.3, message=f"{service} to run")
        yield cluster, service, v2
    finally:
        for name in (service, f"{service}-canary"):
            for found in engine.services.list(filters={"name": name}):
                if found.name == name:
                    found.remove()
        acct.client.delete(f"/swarm/clusters/{cluster['id']}")


def start_canary(acct, cluster: dict, service: str, image: str) -> int:
    """A canary of ``image``, once it is paused at weight 50 (its ``pause: {}`` step)."""
    deployment_id = ok(acct.client.post("/swarm/deployments", json={
        "cluster_id": cluster["id"], "service": service, "image": image, "strategy": "canary",
        "steps": CANARY_STEPS}), 201)["id"]
    wait_for(lambda: ok(acct.client.get(f"/swarm/deployments/{deployment_id}"))["status"] in ("paused", *FINISHED),
             timeout=120, interval=0.5, message="the canary to pause")
    return deployment_id


def finished(acct, deployment_id: int) -> dict:
    return wait_for(lambda: (d := ok(acct.client.get(f"/swarm/deployments/{deployment_id}")))["status"] in FINISHED
                    and d, timeout=120, interval=0.5, message=f"deployment {deployment_id} to end")


def test_a_canary_is_shown_paused_at_50_refuses_pause_and_resume_and_is_promoted(stack, devops, swarm):
    acct = stack.account()

    def cli(*args: str) -> Result:
        return devops(stack.url, acct.token, *args)

    with swarm_service(acct, swarm, uuid.uuid4().hex[:8]) as (cluster, service, v2):
        deployment_id = None
        try:
            deployment_id = start_canary(acct, cluster, service, v2)

            shown = cli("deploy", "status", str(deployment_id))
            assert shown.exit_code == 0, shown.output
            fields = field_lines(shown.stdout)
            assert fields["deployment"] == str(deployment_id)
            assert fields["service"] == f"{service} on cluster {cluster['id']}"
            assert fields["strategy"] == "canary"
            assert fields["status"] == "paused"
            assert fields["weight"] == "50"
            assert fields["step"] == "2 of 2 (pause)"  # the API's current_step is an index from 0
            assert fields["image"] == v2
            assert "weight_set" in shown.stdout and "paused" in shown.stdout  # the event timeline

            as_json = cli("deploy", "status", str(deployment_id), "--json")
            assert as_json.exit_code == 0, as_json.output
            body = json.loads(as_json.stdout)
            assert body["id"] == deployment_id and body["status"] == "paused" and body["live"] is True
            assert body["state"]["weight"] == 50 and body["state"]["pause"] is not None
            assert body["config"]["steps"] == CANARY_STEPS

            # at a `pause: {}` step only promote goes on: pause and resume are refused (409 → exit 1)
            paused_again = cli("deploy", "pause", str(deployment_id), "-m", "hold")
            assert paused_again.exit_code == 1, paused_again.output
            assert "pause refused: the rollout is already paused (HTTP 409)" in paused_again.stderr
            assert paused_again.stdout == ""
            resumed = cli("deploy", "resume", str(deployment_id))
            assert resumed.exit_code == 1, resumed.output
            assert "resume refused:" in resumed.stderr and "use promote to go on (HTTP 409)" in resumed.stderr
            assert ok(acct.client.get(f"/swarm/deployments/{deployment_id}"))["status"] == "paused"

            listed = cli("deploy", "list", "--json")
            assert listed.exit_code == 0, listed.output
            assert deployment_id in [d["id"] for d in json.loads(listed.stdout)["data"]]
            table = cli("deploy", "list")
            assert table.exit_code == 0, table.output
            assert re.search(rf"\b{deployment_id}\b.*{service}.*canary.*paused", table.stdout)

            promoted = cli("deploy", "promote", str(deployment_id), "-m", "looks good")
            assert promoted.exit_code == 0, promoted.output
            assert f"promote: deployment {deployment_id} is" in promoted.stdout
            assert "promotion requested" in promoted.stdout
            final = finished(acct, deployment_id)
            assert final["status"] == "completed", final
            spec = swarm.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
            assert spec["Image"].startswith(v2)

            done = cli("deploy", "status", str(deployment_id))
            assert done.exit_code == 0, done.output
            assert field_lines(done.stdout)["status"] == "completed"
            assert "rollout_completed" in done.stdout

            # a finished rollout: the API's 409 on stderr, exit 1, nothing on stdout
            again = cli("deploy", "promote", str(deployment_id))
            assert again.exit_code == 1, again.output
            assert "promote refused: the rollout has already ended (completed) (HTTP 409)" in again.stderr
            assert again.stdout == ""
        finally:
            if deployment_id is not None:
                acct.client.post(f"/swarm/deployments/{deployment_id}/abort")


def test_a_canary_is_aborted_and_ended_or_unknown_rollouts_exit_1(stack, devops, swarm):
    acct = stack.account()

    def cli(*args: str) -> Result:
        return devops(stack.url, acct.token, *args)

    with swarm_service(acct, swarm, uuid.uuid4().hex[:8]) as (cluster, service, v2):
        deployment_id = None
        try:
            deployment_id = start_canary(acct, cluster, service, v2)
            assert ok(acct.client.get(f"/swarm/deployments/{deployment_id}"))["status"] == "paused"
            aborted = cli("deploy", "abort", str(deployment_id), "--reason", REASON, "--json")
            assert aborted.exit_code == 0, aborted.output
            answer = json.loads(aborted.stdout)
            assert answer["deployment_id"] == deployment_id and answer["action"] == "abort"
            assert answer["message"] == "abort requested"
            final = finished(acct, deployment_id)
            assert final["status"] == "aborted" and final["error"] == REASON, final
            assert swarm.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] != v2

            shown = cli("deploy", "status", str(deployment_id))
            assert shown.exit_code == 0, shown.output
            fields = field_lines(shown.stdout)
            # the reason is shown as typed: not read as rich markup (which raised MarkupError on "[/x]")
            assert fields["status"] == "aborted" and fields["error"] == REASON

            for action in ("promote", "abort", "pause", "resume"):
                refused = cli("deploy", action, str(deployment_id))
                assert refused.exit_code == 1, (action, refused.output)
                assert f"{action} refused: the rollout has already ended (aborted) (HTTP 409)" in refused.stderr

            listed = json.loads(cli("deploy", "list", "--json").stdout)
            assert deployment_id in [d["id"] for d in listed["data"]]
        finally:
            if deployment_id is not None:
                acct.client.post(f"/swarm/deployments/{deployment_id}/abort")

    # an unknown id (and another account's rollout is just as unknown)
    other = stack.account()
    for args in (("status", "999999"), ("promote", "999999"), ("abort", "999999"), ("status", str(deployment_id))):
        unknown = devops(stack.url, other.token, "deploy", *args)
        assert unknown.exit_code == 1, (args, unknown.output)
        assert "not found" in unknown.stderr and "HTTP 404" in unknown.stderr
    assert json.loads(devops(stack.url, other.token, "deploy", "list", "--json").stdout)["data"] == []
    empty = devops(stack.url, other.token, "deploy", "list")
    assert empty.exit_code == 0 and "no deployments" in empty.stderr


def test_hosts_list_and_show_a_docker_host_with_its_status(stack, devops, engine):
    acct = stack.account()

    def cli(*args: str) -> Result:
        return devops(stack.url, acct.token, *args)

    empty = cli("hosts", "list")
    assert empty.exit_code == 0 and "no Docker hosts" in empty.stderr
    marker = uuid.uuid4().hex[:8]
    host = ok(acct.client.post("/docker/hosts", json={"name": f"cli-host-{marker} [red]", "endpoint": SOCKET,
                                                      "auto_sync": False}), 201)
    try:
        listed = cli("hosts", "list", "--json")
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)["data"]
        assert [(h["id"], h["name"], h["endpoint"], h["auto_sync"]) for h in rows] == [
            (host["id"], host["name"], SOCKET, False)]
        assert rows[0]["status"] == host["status"]

        shown = cli("hosts", "show", str(host["id"]))
        assert shown.exit_code == 0, shown.output
        fields = field_lines(shown.stdout)
        assert fields["host"] == f"{host['id']} {host['name']}"
        assert fields["endpoint"] == SOCKET
        assert fields["status"] == host["status"]
        assert fields["auto sync"].startswith("False every")
        assert fields["last sync"] == "-"

        # a sync round: the host is connected, with its counts
        ok(acct.client.post(f"/docker/hosts/{host['id']}/sync"), 200, 202)
        synced = wait_for(lambda: (h := ok(acct.client.get(f"/docker/hosts/{host['id']}")))["last_synced_at"]
                          and h, timeout=90, interval=0.5, message="the host sync")
        assert synced["status"] == "connected", synced
        fields = field_lines(cli("hosts", "show", str(host["id"])).stdout)
        assert fields["status"] == "connected"
        assert fields["last sync"] != "-" and fields["containers"] == str(synced["containers"])
        shown_json = json.loads(cli("hosts", "show", str(host["id"]), "--json").stdout)
        assert shown_json["status"] == "connected" and shown_json["id"] == host["id"]
        table = cli("hosts", "list")
        assert table.exit_code == 0, table.output
        assert re.search(rf"\b{host['id']}\b.*{re.escape(host['name'])}.*{re.escape(SOCKET)}.*connected",
                         table.stdout)

        unknown = cli("hosts", "show", "999999")
        assert unknown.exit_code == 1 and "not found" in unknown.stderr and "HTTP 404" in unknown.stderr
    finally:
        acct.client.delete(f"/docker/hosts/{host['id']}")
