"""RolloutWorkflow on a real single-node swarm: canary, blue/green, rolling and rollback, control
through the API, a worker killed mid-rollout, and the pipeline ``deploy`` step.

Images are busybox imports with a HEALTHCHECK on ``/tmp/healthy`` (1 s interval, 2 retries): the
good ones serve their version with ``httpd``; the bad one is healthy for a few seconds and then
unhealthy, so it passes the start and fails the analysis. Most tests run on SQLite only (one
swarm, two cores); the API test runs on both backends.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from docker.errors import NotFound
from docker.types import ServiceMode
from temporalio.worker import Replayer

from db.models import SwarmCluster
from domain.rollouts import achieved_weight, canary_replicas, parse_duration, rollout_problems
from tests.docker_support import busybox_image, docker_or_skip
from tests.harness import build_stack, connect, make_settings, wait_for, wait_run, worker_process
from tests.workflows.test_pipeline_run import create_pipeline, steps_by_id, trigger

# Shares the single-node swarm with tests/api/test_swarm.py (which drains the node for a moment):
# one xdist worker runs the whole group, in order.
pytestmark = pytest.mark.xdist_group("swarm")

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
HEALTHCHECK = "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD test -f /tmp/healthy || exit 1"


def _web_image(client, version: str) -> str:
    serve = (f"touch /tmp/healthy; mkdir -p /tmp/www; echo {version} > /tmp/www/index.html; "
             "exec httpd -f -p 8080 -h /tmp/www")
    return busybox_image(client, changes=[HEALTHCHECK, f'CMD ["sh", "-c", "{serve}"]'],
                         extra_files={"etc/version": version.encode()})


@pytest.fixture(scope="module")
def docker_client():
    client = docker_or_skip()
    if not client.info().get("Swarm", {}).get("ControlAvailable"):
        pytest.skip("the Docker engine is not a swarm manager (docker swarm init)")
    yield client
    client.close()


@pytest.fixture(scope="module")
def images(docker_client) -> dict[str, str]:
    bad = busybox_image(docker_client, changes=[
        HEALTHCHECK, 'CMD ["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; exec sleep 1000"]'],
        extra_files={"etc/version": b"bad"})
    return {"v1": _web_image(docker_client, "v1"), "v2": _web_image(docker_client, "v2"), "bad": bad}


@pytest.fixture(scope="module")
def network(docker_client) -> Iterator[str]:
    net = docker_client.networks.create(f"rollout-test-{uuid.uuid4().hex[:6]}", driver="overlay", attachable=True)
    yield net.name
    for _ in range(20):
        try:
            net.remove()
            break
        except NotFound:
            break
        except Exception:  # noqa: BLE001 - tasks still detaching from the network
            time.sleep(0.5)


class Swarm:
    """The services a test creates, all removed at the end."""

    def __init__(self, client, network: str) -> None:
        self.client = client
        self.network = network
        self.names: list[str] = []

    def service(self, image: str, replicas: int = 2, account: int | None = None) -> str:
        """A service of ``account``: the local engine is shared, so a rollout reaches only services
        labelled with the caller's account."""
        name = f"ro-{uuid.uuid4().hex[:6]}"
        self.names += [name, f"{name}-canary", f"{name}-green"]
        self.client.services.create(image, name=name, networks=[self.network],
                                    mode=ServiceMode("replicated", replicas=replicas),
                                    labels={"devops.account": str(account)} if account is not None else None)
        wait_for(lambda: self.running(name) >= replicas, timeout=60, interval=0.3,
                 message=f"{name} to run {replicas} healthy tasks")
        return name

    def get(self, name: str):
        try:
            return self.client.services.get(name)
        except NotFound:
            return None

    def running(self, name: str) -> int:
        service = self.get(name)
        if service is None:
            return 0
        return sum(1 for t in service.tasks({"desired-state": "running"})
                   if t["Status"]["State"] == "running")

    def image_ids(self, name: str) -> set[str]:
        """Image ids of the containers of the service's running tasks."""
        ids = set()
        for task in self.get(name).tasks({"desired-state": "running"}):
            container = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            if container and task["Status"]["State"] == "running":
                ids.add(self.client.api.inspect_container(container)["Image"])
        return ids

    def cleanup(self) -> None:
        for name in self.names:
            service = self.get(name)
            if service is not None:
                service.remove()


@pytest.fixture
def swarm(docker_client, network) -> Iterator[Swarm]:
    created = Swarm(docker_client, network)
    yield created
    created.cleanup()


def add_cluster(stack, acct) -> int:
    with stack.sessions.begin() as session:
        cluster = SwarmCluster(account_id=acct.id, name=f"local-{uuid.uuid4().hex[:6]}",
                               endpoint="unix:///var/run/docker.sock", status="active", auto_sync=False)
        session.add(cluster)
        session.flush()
        return cluster.id


def deploy(acct, cluster_id: int, service: str, image: str, strategy: str = "canary", **options) -> dict:
    response = acct.client.post("/swarm/deployments", json={"cluster_id": cluster_id, "service": service,
                                                            "image": image, "strategy": strategy, **options})
    assert response.status_code == 201, response.text
    return response.json()


def wait_status(acct, deployment_id: int, statuses: set[str], timeout: float = 90) -> dict:
    last: dict = {}

    def done():
        last.update(acct.client.get(f"/swarm/deployments/{deployment_id}").json())
        return dict(last) if last["status"] in statuses else None

    try:
        return wait_for(done, timeout=timeout, interval=0.3, message=f"deployment {deployment_id} to be {statuses}")
    except AssertionError:
        raise AssertionError(f"deployment {deployment_id} is {last.get('status')}, not {statuses}: "
                             f"{json.dumps(last.get('state'))[:3000]}") from None


def events(acct, deployment_id: int) -> list[str]:
    return [e["event_type"] for e in acct.client.get(f"/swarm/deployments/{deployment_id}/events").json()["data"]]


def image_id(client, tag: str) -> str:
    return client.images.get(tag).id


# ---- pure rules ------------------------------------------------------------------------------------


def test_canary_replicas_follow_the_weight_against_the_stable_count():
    assert [canary_replicas(4, w) for w in (10, 20, 50, 75, 100)] == [1, 1, 4, 12, 4]
    assert canary_replicas(1, 20) == 1 and round(achieved_weight(1, 1)) == 50  # coarse: warned about
    assert canary_replicas(9, 10) == 1 and round(achieved_weight(9, 1)) == 10


def test_durations_and_strategy_options_are_checked_naming_the_field():
    assert [parse_duration(v) for v in (5, "5", "5s", "2m", "1h")] == [5, 5, 5, 120, 3600]
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert rollout_problems("canary", [{"set_weight": 20}, {"pause": {}}, {"analysis": {"count": 2}}], None, None) == []
    assert [loc for loc, _ in rollout_problems("canary", [{"set_weight": 20}, {"set_weight": 20}], None, None)] == [
        ("steps", 1, "set_weight")]
    assert [loc for loc, _ in rollout_problems("canary", [{"analysis": {"metrics": [{"provider": "prom"}]}}],
                                               None, None)] == [("steps", 0, "analysis", "metrics", 0, "provider")]
    assert [loc for loc, _ in rollout_problems("blue_green", None, {"auto_promotion_seconds": "x"}, None)] == [
        ("blue_green", "auto_promotion_seconds")]
    assert [loc for loc, _ in rollout_problems("rolling", None, None, {"parallelism": 0})] == [
        ("rolling", "parallelism")]


# ---- canary ----------------------------------------------------------------------------------------


def test_a_canary_that_passes_analysis_is_promoted_through_the_api_and_stable_runs_the_new_digest(
        stack, swarm, images, docker_client):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=2, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], steps=[
        {"set_weight": 50},
        {"analysis": {"interval": 1, "count": 2, "failure_limit": 0, "http": {"port": 8080, "path": "/"}}},
        {"pause": {}},
    ])
    assert created["status"] == "pending" and created["workflow_id"] == f"rollout-{created['id']}"
    paused = wait_status(acct, created["id"], {"paused", "failed"})
    assert paused["status"] == "paused", (paused["error"], paused["state"])
    state = paused["state"]
    assert paused["live"] and state["current_step"] == 2 and state["pause"]["kind"] == "step", state
    assert state["weight"] == 50 and state["replicas"] == {"stable": 2, "canary": 2}
    assert [(a["metric"], a["result"]) for a in state["analyses"]] == [("tasks", "successful"), ("http", "successful")]
    canary = swarm.get(f"{service}-canary")
    aliases = canary.attrs["Spec"]["TaskTemplate"]["Networks"][0]["Aliases"]
    assert service in aliases  # shares the stable's name on its network
    assert swarm.image_ids(f"{service}-canary") == {image_id(docker_client, images["v2"])}

    response = acct.client.post(f"/swarm/deployments/{created['id']}/promote", json={})
    assert response.status_code == 200, response.text
    final = wait_status(acct, created["id"], {"completed", "failed", "rolled_back"})
    assert final["status"] == "completed", final
    assert final["revision"] == 2 and final["previous_revision"] == 1
    assert final["image_digest"] == image_id(docker_client, images["v2"])
    stable = swarm.get(service)
    assert stable.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v2"]
    assert stable.attrs["Spec"]["UpdateConfig"]["Order"] == "start-first"
    wait_for(lambda: swarm.image_ids(service) == {image_id(docker_client, images["v2"])}, timeout=30,
             message="stable tasks on the new image")
    assert swarm.get(f"{service}-canary") is None
    kinds = events(acct, created["id"])
    assert kinds[0] == "rollout_started" and kinds[-1] == "rollout_completed"
    assert {"weight_set", "analysis_completed", "paused", "promotion_started", "stable_update_finished"} <= set(kinds)

    from worker import WORKFLOWS  # the recorded history replays against the current code

    history = stack.infra.run(stack.temporal.get_workflow_handle(created["workflow_id"]).fetch_history())
    stack.infra.run(Replayer(workflows=WORKFLOWS).replay_workflow(history))


@SQLITE_ONLY
def test_a_bad_revision_fails_analysis_removes_the_canary_and_leaves_stable_untouched(stack, swarm, images):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    before = swarm.get(service).attrs
    created = deploy(acct, cluster, service, images["bad"], steps=[
        {"set_weight": 50}, {"analysis": {"interval": 1, "count": 15, "failure_limit": 0}}, {"pause": {}}])
    final = wait_status(acct, created["id"], {"completed", "failed", "aborted", "paused"})
    assert final["status"] == "failed", final
    assert "analysis failed" in final["error"]
    assert final["state"]["analyses"][0]["result"] == "failed"
    assert swarm.get(f"{service}-canary") is None
    after = swarm.get(service).attrs
    assert after["Version"]["Index"] == before["Version"]["Index"]  # stable was never touched
    assert after["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v1"]
    assert "new_revision_removed" in events(acct, created["id"])


@SQLITE_ONLY
def test_abort_during_a_pause_removes_the_canary_and_refusals_say_why(stack, swarm, images):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], steps=[{"set_weight": 50}, {"pause": {}}])
    url = f"/swarm/deployments/{created['id']}"
    early = acct.client.post(f"{url}/promote")  # still starting or scaling: nothing to promote yet
    if early.status_code == 409:
        assert "promote is only possible while the rollout is paused" in early.json()["detail"] \
            or "starting" in early.json()["detail"]
    wait_status(acct, created["id"], {"paused"})
    assert swarm.running(f"{service}-canary") == 1
    refused = acct.client.post(f"{url}/resume")
    assert refused.status_code == 409 and "use promote" in refused.json()["detail"]
    refused = acct.client.post(f"{url}/pause")
    assert refused.status_code == 409 and "already paused" in refused.json()["detail"]

    response = acct.client.post(f"{url}/abort", json={"reason": "wrong build"})
    assert response.status_code == 200, response.text
    final = wait_status(acct, created["id"], {"aborted", "completed", "failed"})
    assert final["status"] == "aborted" and final["error"] == "wrong build"
    assert swarm.get(f"{service}-canary") is None
    assert swarm.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v1"]
    late = acct.client.post(f"{url}/promote")
    assert late.status_code == 409 and "already ended" in late.json()["detail"]


@SQLITE_ONLY
def test_pause_and_resume_hold_a_canary_between_steps(stack, swarm, images):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"],
                     steps=[{"pause": {"duration": 3}}, {"set_weight": 50}, {"pause": {}}])
    url = f"/swarm/deployments/{created['id']}"
    wait_status(acct, created["id"], {"paused"})
    wait_status(acct, created["id"], {"progressing"}, timeout=20)  # the 3 s timer ended the pause
    response = acct.client.post(f"{url}/pause")
    if response.status_code == 200:  # between steps: held as soon as the step ends
        held = wait_status(acct, created["id"], {"paused"})
        if held["state"]["pause"]["kind"] == "user":
            assert acct.client.post(f"{url}/resume").status_code == 200
    final_pause = wait_for(lambda: (b := acct.client.get(url).json())["state"].get("pause")
                           and b["state"]["pause"]["kind"] == "step" and b, timeout=60, message="the last pause")
    assert final_pause["state"]["current_step"] == 2
    assert acct.client.post(f"{url}/abort").status_code == 200
    wait_status(acct, created["id"], {"aborted"})


# ---- blue/green ------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_blue_green_moves_the_alias_to_green_and_scales_blue_to_zero(stack, swarm, images):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=2, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], strategy="blue_green", blue_green={
        "auto_promotion_seconds": 1, "scale_down_delay_seconds": 1,
        "pre_promotion_analysis": {"interval": 1, "count": 2},
        "post_promotion_analysis": {"interval": 1, "count": 2}})
    final = wait_status(acct, created["id"], {"completed", "failed", "rolled_back", "aborted"})
    assert final["status"] == "completed", final
    green = swarm.get(f"{service}-green").attrs["Spec"]
    blue = swarm.get(service).attrs["Spec"]
    assert f"{service}-active" in green["TaskTemplate"]["Networks"][0]["Aliases"]
    assert f"{service}-active" not in ((blue["TaskTemplate"].get("Networks") or [{}])[0].get("Aliases") or [])
    assert green["Labels"]["devops.router"] == "active" and blue["Labels"]["devops.router"] == "inactive"
    assert blue["Mode"]["Replicated"]["Replicas"] == 0 and swarm.running(f"{service}-green") == 2
    assert [a["phase"] for a in final["state"]["analyses"]] == ["pre-promotion", "post-promotion"]
    assert {"green_created", "traffic_switched", "blue_scaled_down"} <= set(events(acct, created["id"]))


@SQLITE_ONLY
def test_blue_green_switches_back_when_the_post_promotion_analysis_fails(stack, swarm, images):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    created = deploy(acct, cluster, service, images["bad"], strategy="blue_green", blue_green={
        "auto_promotion_seconds": 0, "scale_down_delay_seconds": 1,
        "post_promotion_analysis": {"interval": 1, "count": 15}})
    final = wait_status(acct, created["id"], {"completed", "failed", "rolled_back", "aborted"})
    assert final["status"] == "rolled_back", final
    assert "switched back" in final["error"]
    blue = swarm.get(service).attrs["Spec"]
    assert f"{service}-active" in blue["TaskTemplate"]["Networks"][0]["Aliases"]
    assert blue["Labels"]["devops.router"] == "active" and blue["Mode"]["Replicated"]["Replicas"] == 1
    assert swarm.get(f"{service}-green") is None
    assert events(acct, created["id"]).count("traffic_switched") == 2


# ---- rolling and rollback ----------------------------------------------------------------------------


@SQLITE_ONLY
def test_a_rolling_update_is_start_first_and_a_rollback_goes_to_an_earlier_revision(
        stack, swarm, images, docker_client):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=2, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], strategy="rolling",
                     rolling={"parallelism": 1, "delay": 0, "monitor": 1})
    refused = acct.client.post(f"/swarm/deployments/{created['id']}/promote")
    assert refused.status_code == 409
    final = wait_status(acct, created["id"], {"completed", "failed", "rolled_back"})
    assert final["status"] == "completed", final
    spec = swarm.get(service).attrs["Spec"]
    update = spec["UpdateConfig"]
    assert update["Order"] == "start-first" and update["FailureAction"] == "rollback" and update["Parallelism"] == 1
    assert update["Monitor"] >= 3 * 10**9  # interval × retries + timeout of the healthcheck, not the asked 1 s
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == images["v2"]

    missing = acct.client.post(f"/swarm/deployments/{created['id']}/rollback", json={"revision_number": 9})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "revision_number"]
    back = acct.client.post(f"/swarm/deployments/{created['id']}/rollback", json={"revision_number": 1})
    assert back.status_code == 201, back.text
    done = wait_status(acct, back.json()["id"], {"completed", "failed", "rolled_back"})
    assert done["status"] == "completed" and done["revision"] == 1, done
    assert swarm.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v1"]
    wait_for(lambda: swarm.image_ids(service) == {image_id(docker_client, images["v1"])}, timeout=30,
             message="stable back on v1")
    listed = acct.client.get("/swarm/deployments", params={"service": service}).json()
    assert [d["id"] for d in listed["data"]] == [back.json()["id"], created["id"]]


# ---- validation and isolation ---------------------------------------------------------------------


def test_bad_requests_answer_422_naming_the_field_and_other_accounts_get_404(stack, swarm, images):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)

    def problem(**body):
        payload = {"cluster_id": cluster, "service": service, "image": images["v2"], "strategy": "canary",
                   "steps": [{"set_weight": 10}], **body}
        response = acct.client.post("/swarm/deployments", json=payload)
        assert response.status_code == 422, response.text
        return response.json()["detail"][0]["loc"]

    assert problem(strategy="big-bang") == ["body", "strategy"]
    assert problem(steps=[{"set_weight": 50}, {"set_weight": 20}]) == ["body", "steps", 1, "set_weight"]
    assert problem(steps=[{"set_weight": 0}]) == ["body", "steps", 0, "set_weight"]
    assert problem(steps=[{"pause": {"duration": "soon"}}]) == ["body", "steps", 0, "pause", "duration"]
    assert problem(steps=[{"jump": 1}]) == ["body", "steps", 0]
    assert problem(steps=[]) == ["body", "steps"]
    assert problem(service="no-such-service") == ["body", "service"]
    assert problem(image="devops-test/none:missing") == ["body", "image"]
    assert acct.client.post("/swarm/deployments", json={
        "cluster_id": 999999, "service": service, "image": images["v2"], "strategy": "rolling"}).status_code == 404

    created = deploy(acct, cluster, service, images["v2"], steps=[{"set_weight": 50}, {"pause": {}}])
    other = stack.account()
    assert other.client.get(f"/swarm/deployments/{created['id']}").status_code == 404
    assert other.client.post(f"/swarm/deployments/{created['id']}/abort").status_code == 404
    assert other.client.get(f"/swarm/deployments/{created['id']}/events").status_code == 404
    assert other.client.post("/swarm/deployments", json={
        "cluster_id": cluster, "service": service, "image": images["v2"], "strategy": "rolling"}).status_code == 404
    again = acct.client.post("/swarm/deployments", json={
        "cluster_id": cluster, "service": service, "image": images["v2"], "strategy": "rolling"})
    assert again.status_code == 409  # one rollout per service at a time
    wait_status(acct, created["id"], {"paused"})
    assert acct.client.post(f"/swarm/deployments/{created['id']}/abort").status_code == 200
    wait_status(acct, created["id"], {"aborted"})


# ---- durability ------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_a_worker_killed_during_a_pause_resumes_the_rollout_at_its_step(
        database_url, infra, temporal_env, tmp_path, swarm, images, docker_client):
    target = temporal_env.client.service_client.config.target_host
    settings = make_settings(database_url, tmp_path / "data", target, temporal_namespace="sqlite")
    stack = build_stack("sqlite", settings, infra, infra.run(connect(target, "sqlite")), worker=False)
    first = worker_process(settings, tmp_path / "worker1.log")
    second = None
    try:
        acct = stack.account()
        cluster = add_cluster(stack, acct)
        service = swarm.service(images["v1"], replicas=1, account=acct.id)
        created = deploy(acct, cluster, service, images["v2"], steps=[{"set_weight": 50}, {"pause": {}}])
        paused = wait_status(acct, created["id"], {"paused", "failed"}, timeout=120)
        assert paused["status"] == "paused", (paused["error"], paused["state"])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = worker_process(settings, tmp_path / "worker2.log")
        shown = acct.client.get(f"/swarm/deployments/{created['id']}").json()
        assert shown["status"] == "paused" and shown["current_step"] == 1
        response = acct.client.post(f"/swarm/deployments/{created['id']}/promote", timeout=60)
        assert response.status_code == 200, response.text
        final = wait_status(acct, created["id"], {"completed", "failed", "rolled_back"}, timeout=120)
        assert final["status"] == "completed", (final, (tmp_path / "worker2.log").read_text()[-3000:])
        assert events(acct, created["id"]).count("weight_set") == 1  # the step before the kill ran once
        assert swarm.get(f"{service}-canary") is None
        wait_for(lambda: swarm.image_ids(service) == {image_id(docker_client, images["v2"])}, timeout=30,
                 message="stable on v2")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        stack.close()


# ---- the pipeline's deploy step --------------------------------------------------------------------


@SQLITE_ONLY
def test_a_deploy_step_runs_the_rollout_as_a_child_after_an_approval_gate(stack, swarm, images, docker_client):
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    admin = acct.client.get("/users/me").json()["email"]
    bad = acct.client.post("/pipelines", json={"name": f"p-{uuid.uuid4().hex[:6]}", "steps": [
        {"id": "ship", "type": "deploy", "with": {"cluster": cluster, "service": service, "image": images["v2"],
                                                   "strategy": "canary", "steps": [{"set_weight": 120}]}}]})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["loc"][-4:] == ["with", "steps", 0, "set_weight"]
    pid = create_pipeline(acct, steps=[{
        "id": "ship", "type": "deploy", "requires_approval": True,
        "approval": {"recipients": [admin], "allow_self_approval": True, "timeout_minutes": 10},
        "with": {"cluster": cluster, "service": service, "image": images["v2"], "strategy": "canary",
                 "steps": [{"set_weight": 50}, {"analysis": {"interval": 1, "count": 2}}]}}])
    run = trigger(acct, pid)
    wait_for(lambda: steps_by_id(acct.client.get(f"/pipeline_runs/{run['id']}").json())
             .get("ship", {}).get("status") == "waiting_approval", timeout=30, message="the approval gate")
    assert swarm.get(f"{service}-canary") is None  # nothing deployed before the approval
    approved = acct.client.post(f"/pipeline_runs/{run['id']}/steps/ship/approve", json={"comment": "go"})
    assert approved.status_code == 200, approved.text
    final = wait_run(acct.client, run["id"], timeout=120)
    assert final["status"] == "success", final
    outputs = steps_by_id(final)["ship"]["outputs"]
    assert outputs["outcome"] == "completed" and outputs["revision"] == 2
    shown = acct.client.get(f"/swarm/deployments/{outputs['deployment_id']}").json()
    assert shown["pipeline_run_id"] == run["id"] and shown["status"] == "completed"
    assert swarm.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v2"]


# ---- Prometheus analysis (Flagger-style thresholds; Debian's prometheus scraping itself) ---------

UP = 'up{job="prometheus"}'


def _prometheus_has_data(stack) -> None:
    from activities.rollouts import query_prometheus

    url = stack.settings.prometheus_url
    wait_for(lambda: query_prometheus(url, "x", {"query": UP, "min": 1}).value == "pass", timeout=60,
             message=f"Prometheus at {url} to have scraped itself (scripts/test-services.sh starts it)")


def test_prometheus_queries_pass_fail_or_are_inconclusive(stack):
    from activities.rollouts import query_prometheus

    _prometheus_has_data(stack)
    url = stack.settings.prometheus_url
    assert query_prometheus(url, "web", {"query": UP, "min": 1}).value == "pass"
    failed = query_prometheus(url, "web", {"query": UP, "max": 0})
    assert failed.value == "fail" and "above the maximum 0" in failed.detail
    assert query_prometheus(url, "web", {"query": f"scalar({UP})", "min": 0.5, "max": 1}).value == "pass"
    # {service} stands for the service measured
    assert query_prometheus(url, "prometheus", {"query": 'up{job="{service}"}', "min": 1}).value == "pass"
    for spec, why in (({"query": 'up{job="nobody"}', "min": 1}, "no data"),
                      ({"query": "up{", "min": 1}, "refused the query")):
        measured = query_prometheus(url, "web", spec)
        assert measured.value == "error" and why in measured.detail, measured
    assert query_prometheus("", "web", {"query": UP, "min": 1}).value == "error"
    assert query_prometheus("http://127.0.0.1:9", "web", {"query": UP, "min": 1}).value == "error"


def test_prometheus_metric_validation_names_the_field():
    from api.deployment_schemas import analysis_problems

    def problems(metric):
        return {tuple(loc): msg for loc, msg in analysis_problems(("steps", 1, "analysis"), {"metrics": [metric]})}

    base = ("steps", 1, "analysis", "metrics", 0, "prometheus")
    assert problems({"provider": "prometheus", "prometheus": {"query": UP, "min": 1}}) == {}
    assert (*base, "min") in problems({"provider": "prometheus", "prometheus": {"query": UP}})
    assert (*base, "query") in problems({"provider": "prometheus", "prometheus": {"min": 1}})
    assert (*base, "max") in problems({"provider": "prometheus", "prometheus": {"query": UP, "max": "high"}})
    assert (*base, "url") in problems({"provider": "prometheus", "prometheus": {"query": UP, "min": 1,
                                                                               "url": "http://169.254.169.254"}})
    assert (*base, "min") in problems({"provider": "prometheus", "prometheus": {"query": UP, "min": 2, "max": 1}})


def test_a_prometheus_analysis_gates_canaries(stack, swarm, images, docker_client):
    _prometheus_has_data(stack)
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)

    def analysis(prometheus):
        return {"analysis": {"metrics": [{"name": "up", "provider": "prometheus", "interval": 1, "count": 2,
                                          "prometheus": prometheus}]}}

    passed = deploy(acct, cluster, service, images["v2"], steps=[{"set_weight": 50}, analysis({"query": UP, "min": 1})])
    final = wait_status(acct, passed["id"], {"completed", "failed", "rolled_back", "paused"})
    assert final["status"] == "completed", final
    assert ("up", "successful") in [(a["metric"], a["result"]) for a in final["state"]["analyses"]]

    failing = deploy(acct, cluster, service, images["v1"], steps=[{"set_weight": 50}, analysis({"query": UP, "max": 0})])
    final = wait_status(acct, failing["id"], {"completed", "failed", "rolled_back", "paused"})
    assert final["status"] == "failed" and "above the maximum 0" in final["error"], final
    assert swarm.get(f"{service}-canary") is None
    assert swarm.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v2"]  # untouched

    silent = deploy(acct, cluster, service, images["v1"],
                    steps=[{"set_weight": 50}, analysis({"query": 'up{job="nobody"}', "min": 1})])
    held = wait_status(acct, silent["id"], {"paused", "completed", "failed"})
    assert held["status"] == "paused", held  # inconclusive: no data is never a pass
    assert acct.client.post(f"/swarm/deployments/{silent['id']}/abort", json={}).status_code == 200
    assert wait_status(acct, silent["id"], {"aborted", "failed"})["status"] == "aborted"


def test_a_deploy_step_can_have_its_canary_promotion_approved_in_the_pipeline(stack, swarm, images, docker_client):
    """`approve_promotion: true`: the canary runs, and its `pause: {}` becomes the step's approval
    gate (the existing mechanism: recipients, decisions, expiry); approved → promoted."""
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    admin = acct.client.get("/users/me").json()["email"]
    refused = acct.client.post("/pipelines", json={"name": f"p-{uuid.uuid4().hex[:6]}", "steps": [
        {"id": "ship", "type": "deploy", "with": {"cluster": cluster, "service": service, "image": images["v2"],
                                                   "strategy": "rolling", "approve_promotion": True}}]})
    assert refused.status_code == 422 and "no promotion to approve" in refused.text
    pid = create_pipeline(acct, steps=[{
        "id": "ship", "type": "deploy",
        "approval": {"recipients": [admin], "allow_self_approval": True, "timeout_minutes": 10},
        "with": {"cluster": cluster, "service": service, "image": images["v2"], "strategy": "canary",
                 "approve_promotion": True, "steps": [{"set_weight": 50}, {"pause": {}}]}}])
    run = trigger(acct, pid)
    wait_for(lambda: steps_by_id(acct.client.get(f"/pipeline_runs/{run['id']}").json())
             .get("ship", {}).get("status") == "waiting_approval", timeout=90, message="the promotion gate")
    assert swarm.get(f"{service}-canary") is not None  # the canary runs while the gate waits
    approved = acct.client.post(f"/pipeline_runs/{run['id']}/steps/ship/approve", json={"comment": "canary ok"})
    assert approved.status_code == 200, approved.text
    final = wait_run(acct.client, run["id"], timeout=120)
    assert final["status"] == "success", final
    outputs = steps_by_id(final)["ship"]["outputs"]
    assert outputs["outcome"] == "completed"
    assert swarm.get(f"{service}-canary") is None
    assert swarm.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["v2"]
