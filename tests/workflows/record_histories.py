"""Records the histories that ``test_crash_replay.py`` replays: each main path of each workflow
type, driven on the real stack (Temporal dev server, worker, API, SQLite, Docker, swarm), checked
to replay in the sandbox, and written to ``tests/workflows/histories/<workflow>-<path>.json``.

Run by hand, never in CI (the name keeps pytest from collecting it; the skip guards an explicit
run without the variable); it writes only the files that are missing:

    RECORD_HISTORIES=1 .venv/bin/python -m pytest -p no:xdist -q tests/workflows/record_histories.py [-k path]

An existing file was written by an earlier release's code and must stay as it is: the point is
that changed code still replays what the old code wrote (README, "Changing a workflow safely").
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta

import pytest
from temporalio.client import ScheduleBackfill, ScheduleOverlapPolicy, WorkflowFailureError

from db.models import Pipeline
from services import runs as services
from tests.activities.test_container_execution import (
    instance,
    make_instance,
    outcome_of,
    running_container,
    start,
)
from tests.api.test_docker_hosts import make_host
from tests.api.test_repositories import by_name, fakes, servers  # noqa: F401 - fixtures
from tests.api.test_repositories import connect as connect_provider
from tests.api.test_repositories import sync as sync_repositories
from tests.api.test_swarm import make_cluster
from tests.docker_support import busybox_image
from tests.harness import wait_for, wait_run
from tests.workflows.test_crash_replay import HISTORIES, replay_sandboxed
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id, trigger
from tests.workflows.test_rollouts import (  # noqa: F401 - fixtures
    add_cluster,
    deploy,
    docker_client,
    images,
    network,
    swarm,
    wait_status,
)
from tests.workflows.test_scheduled_trigger import create_pipeline as create_scheduled_pipeline
from tests.workflows.test_scheduled_trigger import (
    create_schedule,
    fire,
    handle,
    last_cron_time,
    schedule_runs,
)
from workflows.host_sync import HostSyncInput, HostSyncWorkflow
from workflows.pipeline_run import PipelineRunWorkflow
from workflows.swarm_sync import SwarmSyncInput, SwarmSyncWorkflow

MODE = os.environ.get("RECORD_HISTORIES", "")
pytestmark = [
    pytest.mark.skipif(MODE not in ("1", "all"), reason="records histories only with RECORD_HISTORIES=1"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.xdist_group("swarm"),
]


def save(stack, name: str, workflow_id: str, run_id: str | None = None) -> None:
    """Fetch the execution's history, check it replays in the sandbox, and write it unless the
    file exists (``RECORD_HISTORIES=all`` rewrites it: only for a history no release ever ran)."""
    history = stack.infra.run(stack.temporal.get_workflow_handle(workflow_id, run_id=run_id).fetch_history())
    replay_sandboxed([history])
    path = HISTORIES / f"{name}.json"
    if path.exists() and MODE != "all":
        return
    HISTORIES.mkdir(exist_ok=True)
    path.write_text(history.to_json())


def closed(stack, workflow_id: str, timeout: float = 60) -> None:
    def done():
        described = stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).describe())
        return described.status is not None and described.status.name != "RUNNING"

    wait_for(done, timeout=timeout, interval=0.3, message=f"{workflow_id} to close")


@pytest.fixture(scope="module")
def image(docker_client) -> str:  # noqa: F811 - the imported module fixture
    return busybox_image(docker_client)


# ---- pipeline queue ----------------------------------------------------------------------------------


def test_record_queue_with_two_runs_and_one_withdrawn(stack):
    acct = stack.account()
    pid = create_pipeline(acct, allow_concurrent=False, steps=[sh("a", "sleep 2")])
    first, second, third = (trigger(acct, pid) for _ in range(3))
    assert acct.client.post(f"/pipeline_runs/{third['id']}/cancel").status_code in (200, 202)
    assert wait_run(acct.client, first["id"])["status"] == "success"
    assert wait_run(acct.client, second["id"])["status"] == "success"
    assert wait_run(acct.client, third["id"])["status"] == "cancelled"
    time.sleep(1)  # the queue's last workflow task (back to waiting) is in the history
    save(stack, "pipeline-queue-two-runs-one-withdrawn", f"pipeline-queue-{pid}")


# ---- scheduled trigger -------------------------------------------------------------------------------


def test_record_scheduled_trigger_paths(stack):
    client = stack.account().client
    pipeline = create_scheduled_pipeline(client)
    schedule = create_schedule(client, pipeline["id"])
    nominal = last_cron_time(3, "UTC")
    stack.infra.run(handle(stack, schedule["id"]).backfill(ScheduleBackfill(
        start_at=nominal - timedelta(minutes=1), end_at=nominal + timedelta(minutes=1),
        overlap=ScheduleOverlapPolicy.ALLOW_ALL)))
    [run] = wait_for(lambda: schedule_runs(client, pipeline["id"]), message="the scheduled run")
    assert wait_run(client, run["id"])["status"] == "success"
    trigger_id = client.get(f"/pipeline_runs/{run['id']}").json()["trigger_context"]["trigger_workflow_id"]
    closed(stack, trigger_id)
    save(stack, "scheduled-trigger-run-success", trigger_id)

    client.patch(f"/pipelines/{pipeline['id']}", json={"is_active": False})
    skipped_id, outcome = fire(stack, schedule["id"])
    assert outcome.status == "skipped"
    save(stack, "scheduled-trigger-skipped", skipped_id)
    assert client.delete(f"/schedules/{schedule['id']}").status_code == 204


# ---- repositories ----------------------------------------------------------------------------------------


def test_record_repository_sync_and_webhook(stack, fakes):  # noqa: F811 - the imported fixture
    client = stack.account().client
    _, credential = connect_provider(client, fakes["github"], "github")
    sync_repositories(client, credential["id"])
    save(stack, "repository-sync-completed", f"repository-sync-{credential['id']}")
    repo = by_name(client)["acme/web"]
    assert client.post(f"/repositories/{repo['id']}/webhook").status_code == 200
    save(stack, "repository-webhook-configure", f"repository-webhook-{repo['id']}")
    assert client.delete(f"/repositories/{repo['id']}/webhook").status_code == 204
    save(stack, "repository-webhook-delete", f"repository-webhook-{repo['id']}")


# ---- containers ------------------------------------------------------------------------------------------


def test_record_container_completed_timeout_and_cancelled(stack, image, docker_client):  # noqa: F811 - fixture
    acct = stack.account()
    done = make_instance(stack, acct.id, image, ["sh", "-c", "echo hello"])
    assert outcome_of(stack, start(stack, acct.id, done)).status == "completed"
    save(stack, "container-execution-completed", f"container-{done}")

    slow = make_instance(stack, acct.id, image, ["sh", "-c", "echo started; sleep 60"], timeout_seconds=2)
    assert outcome_of(stack, start(stack, acct.id, slow)).status == "timeout"
    save(stack, "container-execution-timeout", f"container-{slow}")

    cancelled = make_instance(stack, acct.id, image, ["sleep", "60"])
    started = start(stack, acct.id, cancelled)
    running_container(stack, docker_client, cancelled)
    stack.infra.run(started.cancel())
    with pytest.raises(WorkflowFailureError):
        outcome_of(stack, started)
    assert instance(stack, cancelled).status == "cancelled"
    save(stack, "container-execution-cancelled", f"container-{cancelled}")


# ---- host and swarm sync across continue-as-new -------------------------------------------------------------


def _periodic(stack, workflow_id: str, run, kind) -> str:
    """Drive a sync loop (3 rounds per run, 1 s interval) through every handler and one
    continue-as-new; returns the first run's id.

    Run 1: a round, ``pause``, ``sync_now`` (a round while paused), the ``sync_round`` update (the
    third round, then continue-as-new carrying the pause). Run 2: starts paused, ``resume``, a
    round, ``set_interval``; the caller terminates it (as deleting the target does)."""
    temporal = stack.temporal
    first_run = stack.infra.run(run()).result_run_id

    def current():
        return temporal.get_workflow_handle(workflow_id)

    def state():
        return stack.infra.run(current().query(kind.state))

    wait_for(lambda: state().total_rounds >= 1, timeout=60, message="the first round")
    stack.infra.run(current().signal(kind.pause))
    wait_for(lambda: state().paused, message="paused")
    stack.infra.run(current().signal(kind.sync_now))
    wait_for(lambda: state().total_rounds >= 2, message="the round sync_now asked for")
    assert stack.infra.run(current().execute_update(kind.sync_round)).ok
    wait_for(lambda: stack.infra.run(current().describe()).run_id != first_run, message="continue-as-new")
    assert state().paused and state().total_rounds == 3  # carried over
    stack.infra.run(current().signal(kind.resume))
    wait_for(lambda: state().total_rounds >= 4, message="a round after resume")
    stack.infra.run(current().signal(kind.set_interval, 3600))
    wait_for(lambda: state().interval_seconds == 3600, message="the new interval")
    return first_run


def test_record_host_sync_across_continue_as_new_and_a_single_round(stack):
    acct = stack.account()
    host = make_host(acct.client)  # no auto-sync: this test owns host-sync-<id>
    workflow_id = f"host-sync-{host['id']}"
    first_run = _periodic(
        stack, workflow_id,
        lambda: stack.temporal.start_workflow(
            HostSyncWorkflow.run, HostSyncInput(host_id=host["id"], account_id=acct.id, interval_seconds=1,
                                                rounds_before_continue=3),
            id=workflow_id, task_queue=stack.settings.task_queue),
        HostSyncWorkflow)
    save(stack, "host-sync-first-run-continued-as-new", workflow_id, first_run)
    stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).terminate("recorded"))
    save(stack, "host-sync-after-continue-as-new", workflow_id)

    other = make_host(acct.client)
    response = acct.client.post(f"/docker/hosts/{other['id']}/sync")
    assert response.status_code == 200, response.text
    closed(stack, f"host-sync-{other['id']}")
    save(stack, "host-sync-single-round", f"host-sync-{other['id']}")


def test_record_swarm_sync_across_continue_as_new_and_a_single_round(stack):
    acct = stack.account()
    cluster = make_cluster(acct.client)
    workflow_id = f"swarm-sync-{cluster['id']}"
    first_run = _periodic(
        stack, workflow_id,
        lambda: stack.temporal.start_workflow(
            SwarmSyncWorkflow.run, SwarmSyncInput(cluster_id=cluster["id"], account_id=acct.id, interval_seconds=1,
                                                  rounds_before_continue=3),
            id=workflow_id, task_queue=stack.settings.task_queue),
        SwarmSyncWorkflow)
    save(stack, "swarm-sync-first-run-continued-as-new", workflow_id, first_run)
    stack.infra.run(stack.temporal.get_workflow_handle(workflow_id).terminate("recorded"))
    save(stack, "swarm-sync-after-continue-as-new", workflow_id)

    other = make_cluster(acct.client)
    response = acct.client.post(f"/swarm/clusters/{other['id']}/sync")
    assert response.status_code == 200, response.text
    closed(stack, f"swarm-sync-{other['id']}")
    save(stack, "swarm-sync-single-round", f"swarm-sync-{other['id']}")


# ---- rollouts -----------------------------------------------------------------------------------------------


def test_record_rollout_canary_completed(stack, swarm, images):  # noqa: F811 - imported fixtures
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], steps=[
        {"set_weight": 50}, {"analysis": {"interval": 1, "count": 2, "failure_limit": 0}}, {"pause": {}}])
    assert wait_status(acct, created["id"], {"paused", "failed"})["status"] == "paused"
    assert acct.client.post(f"/swarm/deployments/{created['id']}/promote", json={}).status_code == 200
    assert wait_status(acct, created["id"], {"completed", "failed", "rolled_back"})["status"] == "completed"
    closed(stack, created["workflow_id"])
    save(stack, "rollout-canary-completed", created["workflow_id"])


def test_record_rollout_blue_green_completed(stack, swarm, images):  # noqa: F811 - imported fixtures
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], strategy="blue_green", blue_green={
        "auto_promotion_seconds": 1, "scale_down_delay_seconds": 1,
        "pre_promotion_analysis": {"interval": 1, "count": 2},
        "post_promotion_analysis": {"interval": 1, "count": 2}})
    final = wait_status(acct, created["id"], {"completed", "failed", "rolled_back", "aborted"})
    assert final["status"] == "completed", final
    closed(stack, created["workflow_id"])
    save(stack, "rollout-blue-green-completed", created["workflow_id"])


def test_record_rollout_canary_aborted(stack, swarm, images):  # noqa: F811 - imported fixtures
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    created = deploy(acct, cluster, service, images["v2"], steps=[{"set_weight": 50}, {"pause": {}}])
    wait_status(acct, created["id"], {"paused"})
    response = acct.client.post(f"/swarm/deployments/{created['id']}/abort", json={"reason": "wrong build"})
    assert response.status_code == 200, response.text
    assert wait_status(acct, created["id"], {"aborted", "completed", "failed"})["status"] == "aborted"
    closed(stack, created["workflow_id"])
    save(stack, "rollout-canary-aborted", created["workflow_id"])


# ---- pipeline runs with children, and the run timeout ------------------------------------------------------


def test_record_pipeline_run_with_a_docker_step(stack, image):
    acct = stack.account()
    pid = create_pipeline(acct, steps=[
        sh("prep", "echo from-shell > in.txt"),
        {"id": "box", "type": "run_tests", "with": {
            "executor": "docker", "image": image, "command": 'echo "seen=$(cat in.txt)" >> "$DEVOPS_OUTPUT"'}},
        sh("after", "true"),
    ])
    final = wait_run(acct.client, trigger(acct, pid)["id"], timeout=120)
    assert final["status"] == "success", final
    save(stack, "pipeline-run-docker-step", final["workflow_id"])
    child = steps_by_id(final)["box"]["outputs"]["container_instance_id"]
    save(stack, "container-execution-pipeline-step", f"container-{child}")


def test_record_pipeline_run_timeout(stack):
    acct = stack.account()
    pid = create_pipeline(acct, steps=[sh("slow", "sleep 120"), sh("later", "true")])
    with stack.sessions.begin() as session:
        run = services.create_run(session, session.get(Pipeline, pid), trigger_type="manual", inputs={})
        session.flush()
        inp = dataclasses.replace(services.workflow_input(run, stack.settings), timeout_seconds=2)
        run_id, workflow_id = run.id, run.workflow_id
    stack.infra.run(stack.temporal.start_workflow(PipelineRunWorkflow.run, inp, id=workflow_id,
                                                  task_queue=stack.settings.task_queue))
    assert wait_run(acct.client, run_id, timeout=30)["status"] == "failure"
    closed(stack, workflow_id)
    save(stack, "pipeline-run-timeout", workflow_id)


def test_record_pipeline_run_with_an_approved_deploy_step(stack, swarm, images):  # noqa: F811 - fixtures
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = swarm.service(images["v1"], replicas=1, account=acct.id)
    admin = acct.client.get("/users/me").json()["email"]
    pid = create_pipeline(acct, steps=[{
        "id": "ship", "type": "deploy", "requires_approval": True,
        "approval": {"recipients": [admin], "allow_self_approval": True, "timeout_minutes": 10},
        "with": {"cluster": cluster, "service": service, "image": images["v2"], "strategy": "canary",
                 "steps": [{"set_weight": 50}, {"analysis": {"interval": 1, "count": 2}}]}}])
    run = trigger(acct, pid)
    wait_for(lambda: steps_by_id(acct.client.get(f"/pipeline_runs/{run['id']}").json())
             .get("ship", {}).get("status") == "waiting_approval", timeout=30, message="the approval gate")
    approved = acct.client.post(f"/pipeline_runs/{run['id']}/steps/ship/approve", json={"comment": "go"})
    assert approved.status_code == 200, approved.text
    final = wait_run(acct.client, run["id"], timeout=120)
    assert final["status"] == "success", final
    save(stack, "pipeline-run-deploy-step-approved", final["workflow_id"])
    deployment = steps_by_id(final)["ship"]["outputs"]["deployment_id"]
    save(stack, "rollout-canary-pipeline-child", f"rollout-{deployment}")


# ---- integrations (issue 14) --------------------------------------------------------------------------------


def test_record_integration_executions_and_an_integration_step(stack):
    from tests.integrations import test_integration_executions as handlers  # registers test_block
    from tests.integrations.helpers import create_template, execute, install, unique, wait_execution
    from tests.integrations.receivers import Answer, Receiver

    assert handlers.block
    acct = stack.account()
    client = acct.client
    receiver = Receiver(Answer(503, "busy"), Answer(200, {"build": {"id": "b-1"}}))
    try:
        hook = create_template(client, "webhook", output_schema={"type": "object", "required": ["build_id"]})
        name = unique("hook")
        instance = install(client, hook["id"], {"url": receiver.url, "response_mapping": {"build_id": "$.build.id"}},
                           name=name)
        retried = wait_execution(client, execute(client, instance["id"], {"n": 1}, wait=0)["id"])
        assert retried["status"] == "success" and retried["attempts"] == 2, retried
        closed(stack, retried["workflow_id"])
        save(stack, "integration-execution-retried-success", retried["workflow_id"])

        broken = install(client, create_template(client, "custom")["id"], {"handler": "not-registered"})
        failed = wait_execution(client, execute(client, broken["id"], wait=0)["id"])
        assert failed["status"] == "failure"
        closed(stack, failed["workflow_id"])
        save(stack, "integration-execution-failure", failed["workflow_id"])

        blocking = install(client, create_template(client, "custom")["id"], {"handler": "test_block"})
        started = execute(client, blocking["id"], wait=0)
        wait_for(lambda: client.get(f"/integration_executions/{started['id']}").json()["status"] == "running",
                 message="the execution to run")
        assert client.post(f"/integration_executions/{started['id']}/cancel").status_code == 202
        assert wait_execution(client, started["id"])["status"] == "cancelled"
        closed(stack, started["workflow_id"])
        save(stack, "integration-execution-cancelled", started["workflow_id"])

        pid = create_pipeline(acct, steps=[
            {"id": "hook", "type": "integration", "with": {"instance": name, "inputs": {"ref": "main"}}},
            sh("use", 'test "$B" = "b-1"', env={"B": "${{ steps.hook.outputs.build_id }}"})])
        run = wait_run(client, trigger(acct, pid)["id"])
        assert run["status"] == "success", run
        save(stack, "pipeline-run-integration-step", run["workflow_id"])
        child = client.get(f"/integration_executions/{steps_by_id(run)['hook']['outputs']['execution_id']}").json()
        save(stack, "integration-execution-pipeline-step", child["workflow_id"])
    finally:
        receiver.close()


# ---- claude_execute (issue 14) ---------------------------------------------------------------------------


def test_record_pipeline_run_with_a_claude_execute_step(stack):
    from tests.ai.fake_model_api import API_KEY, FakeModelApi

    fake = FakeModelApi().start()
    try:
        acct = stack.account()
        assert acct.client.post("/ai_configs", json={"name": "claude", "provider": "anthropic", "model": "claude-x",
                                                     "api_key": API_KEY, "base_url": fake.url}).status_code == 201
        pid = create_pipeline(acct, steps=[
            {"id": "ai", "type": "claude_execute", "with": {"prompt": "Say {{ word }}", "variables": {"word": "hi"}}},
            sh("use", 'test -n "$R"', env={"R": "${{ steps.ai.outputs.response }}"}),
        ])
        final = wait_run(acct.client, trigger(acct, pid)["id"], timeout=60)
        assert final["status"] == "success", final
        save(stack, "pipeline-run-claude-execute", final["workflow_id"])
    finally:
        fake.stop()


# ---- A2A callbacks (issue 14) ----------------------------------------------------------------------------


def test_record_pipeline_run_with_an_a2a_callback(stack):
    from activities.containers.callbacks import callback_signing_key
    from tests.a2a.receiver import Receiver

    acct = stack.account()
    receiver = Receiver(callback_signing_key(stack.settings, acct.id), codes=[503])
    try:
        pid = create_pipeline(acct, steps=[sh("ok", "true")])
        response = acct.client.post(f"/pipelines/{pid}/trigger", json={"a2a_task_id": "t-1",
                                                                      "callback_url": receiver.url})
        assert response.status_code == 201, response.text
        final = wait_run(acct.client, response.json()["id"])
        assert final["status"] == "success", final
        save(stack, "pipeline-run-a2a-callback", final["workflow_id"])
        callback_id = f"a2a-callback-run-{final['id']}"
        closed(stack, callback_id)
        assert [d["code"] for d in receiver.deliveries] == [503, 200]
        save(stack, "a2a-callback-retried-delivered", callback_id)
    finally:
        receiver.close()


def test_record_container_execution_with_an_a2a_callback(stack, image):
    from activities.containers.callbacks import callback_signing_key
    from tests.a2a.receiver import Receiver

    acct = stack.account()
    receiver = Receiver(callback_signing_key(stack.settings, acct.id))
    try:
        response = acct.client.post("/containers", json={"image": image, "command": ["sh", "-c", "echo done"],
                                                         "callback_url": receiver.url, "a2a_task_id": "c-1"})
        assert response.status_code == 201, response.text
        instance_id = response.json()["id"]
        closed(stack, f"container-{instance_id}", timeout=120)
        save(stack, "container-execution-a2a-callback", f"container-{instance_id}")
        callback_id = f"a2a-callback-container-{instance_id}"
        closed(stack, callback_id)
        [delivery] = receiver.deliveries
        assert delivery["signature_ok"] and delivery["body"]["a2a_task_id"] == "c-1"
        assert delivery["body"]["event"] == "container.finished"
        save(stack, "a2a-callback-container-delivered", callback_id)
    finally:
        receiver.close()
