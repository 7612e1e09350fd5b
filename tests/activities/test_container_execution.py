"""ContainerExecutionWorkflow on the real Docker engine, with the running stack (both databases):
lifecycle, limits in ``docker inspect``, exit codes, timeout, cancel, a worker killed with
SIGKILL mid-run, log truncation, secret masking, OOM, artifacts and the orphan sweep."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import signal
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from activities.containers import (
    LOG_CAP_BYTES,
    LOG_TRUNCATED_MARKER,
    ContainerActivities,
    callback_signing_key,
    container_name,
    owner_label,
)
from adapters.artifact_store import ArtifactStore
from db.crypto import SecretBox
from db.models import (
    Artifact,
    ContainerEvent,
    ContainerInstance,
    Pipeline,
    PipelineRun,
    ResourceQuota,
    Secret,
    StepLogChunk,
)
from tests.docker_support import busybox_image, docker_or_skip
from tests.harness import wait_for, worker_process
from workflows.container_execution import (
    ContainerExecutionInput,
    ContainerExecutionOutcome,
    ContainerExecutionWorkflow,
    container_workflow_id,
)


@pytest.fixture(scope="module")
def docker_client():
    return docker_or_skip()


@pytest.fixture(scope="module")
def image(docker_client) -> str:
    return busybox_image(docker_client)


def make_instance(stack, account_id: int, image: str, command: list[str], *, status: str = "pending",
                  run: tuple[int, str, int] | None = None, **spec: Any) -> int:
    full = {"image": image, "command": command, "working_dir": "/work", "memory_mb": 64, "cpu_limit": 0.5,
            "pids_limit": 64, "storage_mb": 16, "timeout_seconds": 60, "network_mode": "none", **spec}
    with stack.sessions.begin() as session:
        instance = ContainerInstance(account_id=account_id, image=image, spec=full, status=status,
                                     timeout_seconds=full["timeout_seconds"], reserved_cpu=full["cpu_limit"],
                                     reserved_memory_mb=full["memory_mb"], reserved_storage_mb=full["storage_mb"])
        if run is not None:
            instance.run_id, instance.step_id, instance.attempt = run
        session.add(instance)
        session.flush()
        instance.workflow_id = container_workflow_id(instance.id)
        session.add(ContainerEvent(account_id=account_id, instance_id=instance.id, event_type="status_changed",
                                   payload={"from": None, "to": status}, dedupe_key=f"status:{status}"))
        return instance.id


def start(stack, account_id: int, instance_id: int, task_queue: str | None = None):
    return stack.infra.run(stack.temporal.start_workflow(
        ContainerExecutionWorkflow.run, ContainerExecutionInput(instance_id=instance_id, account_id=account_id),
        id=container_workflow_id(instance_id), task_queue=task_queue or stack.settings.task_queue))


def outcome_of(stack, handle, timeout: float = 90) -> ContainerExecutionOutcome:
    return stack.infra.run(handle.result(), timeout=timeout)


def instance(stack, instance_id: int) -> ContainerInstance:
    with stack.sessions() as session:
        return session.get(ContainerInstance, instance_id)


def statuses(stack, instance_id: int) -> list[str]:
    with stack.sessions() as session:
        events = session.scalars(select(ContainerEvent).where(ContainerEvent.instance_id == instance_id,
                                                              ContainerEvent.event_type == "status_changed")
                                 .order_by(ContainerEvent.id)).all()
        return [e.payload["to"] for e in events]


def containers_of(docker_client, instance_id: int, stack=None) -> list:
    """Containers of an instance; with ``stack``, only that deployment's (the SQLite and PostgreSQL
    stacks share the engine and number their instances independently)."""
    labels = [f"devops.instance={instance_id}"]
    if stack is not None:
        labels.append(f"devops.owner={owner_label(stack.settings)}")
    return docker_client.containers.list(all=True, filters={"label": labels})


def running_container(stack, docker_client, instance_id: int):
    wait_for(lambda: instance(stack, instance_id).status == "running", timeout=60, message="status running")
    return wait_for(lambda: next(iter(containers_of(docker_client, instance_id, stack)), None), timeout=10,
                    message="the container")


def test_a_container_runs_to_completion_with_events_logs_usage_and_is_removed(stack, docker_client, image):
    acct = stack.account()
    iid = make_instance(stack, acct.id, image, ["sh", "-c", "echo hello; sleep 2.5; echo bye >&2"])
    outcome = outcome_of(stack, start(stack, acct.id, iid))
    assert outcome == ContainerExecutionOutcome(status="completed", exit_code=0)
    row = instance(stack, iid)
    assert row.status == "completed" and row.exit_code == 0 and row.error is None
    assert statuses(stack, iid) == ["pending", "provisioning", "running", "completed"]
    assert row.logs == "hello\nbye\n" and not row.logs_truncated
    assert row.name == container_name(iid, stack.settings) and row.container_id and row.image_digest
    assert row.started_at and row.finished_at
    assert row.usage["samples"] >= 1 and row.usage["duration_seconds"] >= 2
    assert row.usage["memory_peak_bytes"] > 0 and "cpu_seconds" in row.usage and "network_rx_bytes" in row.usage
    assert row.violations == []
    assert containers_of(docker_client, iid, stack) == []


def test_a_running_container_has_the_limits_and_security_options_and_a_cancel_kills_and_removes_it(
    stack, docker_client, image
):
    acct = stack.account()
    iid = make_instance(stack, acct.id, image, ["sleep", "60"], memory_mb=48, cpu_limit=0.5, pids_limit=40,
                        labels={"team": "qa", "devops.instance": "spoofed"})
    handle = start(stack, acct.id, iid)
    container = running_container(stack, docker_client, iid)
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 48 * 1024 * 1024 and host["MemorySwap"] == 48 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 40
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert set(host["Tmpfs"]) == {"/work", "/tmp"}
    config = container.attrs["Config"]
    assert config["User"] == "65534:65534" and config["WorkingDir"] == "/work"
    labels = config["Labels"]
    assert labels["devops.instance"] == str(iid) and labels["devops.account"] == str(acct.id)
    assert labels["team"] == "qa" and labels["devops.owner"] == owner_label(stack.settings)
    assert stack.infra.run(handle.query(ContainerExecutionWorkflow.status)) == "running"

    stack.infra.run(handle.cancel())
    with pytest.raises(WorkflowFailureError):
        outcome_of(stack, handle)
    row = instance(stack, iid)
    assert row.status == "cancelled" and statuses(stack, iid)[-1] == "cancelled"
    assert containers_of(docker_client, iid, stack) == []


def test_a_non_zero_exit_fails_with_the_code(stack, docker_client, image):
    acct = stack.account()
    iid = make_instance(stack, acct.id, image, ["sh", "-c", "echo failing; exit 3"])
    outcome = outcome_of(stack, start(stack, acct.id, iid))
    assert outcome.status == "failed" and outcome.exit_code == 3 and outcome.error == "exited with code 3"
    row = instance(stack, iid)
    assert row.status == "failed" and row.exit_code == 3 and row.error == "exited with code 3"
    assert "failing" in row.logs
    assert containers_of(docker_client, iid, stack) == []


def test_a_missing_image_fails_with_a_message_the_user_can_act_on(stack, docker_client, image):
    acct = stack.account()
    iid = make_instance(stack, acct.id, "devops-test/no-such-image:1", ["true"])
    outcome = outcome_of(stack, start(stack, acct.id, iid))
    assert outcome.status == "failed" and "is not on the Docker host" in outcome.error
    assert instance(stack, iid).status == "failed"
    assert containers_of(docker_client, iid, stack) == []


def test_the_timeout_kills_the_container_and_leaves_none(stack, docker_client, image):
    acct = stack.account()
    iid = make_instance(stack, acct.id, image, ["sh", "-c", "echo started; sleep 60"], timeout_seconds=2)
    outcome = outcome_of(stack, start(stack, acct.id, iid))
    assert outcome.status == "timeout" and outcome.error == "timed out after 2 seconds"
    row = instance(stack, iid)
    assert row.status == "timeout" and "started" in row.logs
    assert containers_of(docker_client, iid, stack) == []


def test_logs_are_capped_at_100_kb_with_the_marker(stack, docker_client, image):
    acct = stack.account()
    # 3000 lines of 100 bytes: about 300 KB.
    script = 'i=0; while [ $i -lt 3000 ]; do printf "%099d\\n" $i; i=$((i+1)); done'
    iid = make_instance(stack, acct.id, image, ["sh", "-c", script])
    assert outcome_of(stack, start(stack, acct.id, iid)).status == "completed"
    row = instance(stack, iid)
    assert row.logs_truncated is True
    assert row.logs.endswith(LOG_TRUNCATED_MARKER)
    assert len(row.logs.encode()) == LOG_CAP_BYTES + len(LOG_TRUNCATED_MARKER.encode())
    assert row.logs.startswith("0" * 99 + "\n")


def _pipeline_run(stack, account_id: int) -> int:
    tag = uuid.uuid4().hex[:8]
    with stack.sessions.begin() as session:
        pipeline = Pipeline(account_id=account_id, name=f"p-{tag}", slug=f"p-{tag}")
        session.add(pipeline)
        session.flush()
        run = PipelineRun(account_id=account_id, pipeline_id=pipeline.id, run_number=1, workflow_id=f"run-x-{tag}")
        session.add(run)
        session.flush()
        return run.id


def test_secrets_are_injected_and_masked_in_every_form_in_instance_and_step_logs(stack, docker_client, image):
    acct = stack.account()
    secret = "s3cr3t/v@lue+" + uuid.uuid4().hex[:6]
    with stack.sessions.begin() as session:
        box = SecretBox(stack.settings.secret_key, stack.settings.old_secret_keys)
        session.add(Secret(account_id=acct.id, name="api_token", encrypted_value=box.encrypt(secret)))
    run_id = _pipeline_run(stack, acct.id)
    b64, url = base64.b64encode(secret.encode()).decode(), quote(secret, safe="")
    script = ('echo "plain=$TOKEN"; printf "%s" "$TOKEN" | base64; echo "b64=$B64"; echo "url=$URL"; '
              'echo "len=${#TOKEN}"')
    iid = make_instance(stack, acct.id, image, ["sh", "-c", script], run=(run_id, "build", 1),
                        secret_env={"TOKEN": "api_token"}, env={"B64": b64, "URL": url})
    assert outcome_of(stack, start(stack, acct.id, iid)).status == "completed"
    logs = instance(stack, iid).logs
    with stack.sessions() as session:
        step_log = "\n".join(c.content for c in session.scalars(
            select(StepLogChunk).where(StepLogChunk.run_id == run_id, StepLogChunk.step_id == "build")
            .order_by(StepLogChunk.seq)))
    assert f"len={len(secret)}" in logs  # the value did reach the container
    for text in (logs, step_log):
        assert "plain=***" in text and "b64=***" in text and "url=***" in text
        for form in (secret, b64, b64.rstrip("="), url):
            assert form not in text
    assert "len=" in step_log
    hist = stack.infra.run(stack.temporal.get_workflow_handle(container_workflow_id(iid)).fetch_history())
    assert secret not in hist.to_json() and b64 not in hist.to_json()


def test_an_out_of_memory_kill_is_a_violation_and_a_failure(stack, docker_client, image):
    acct = stack.account()
    iid = make_instance(stack, acct.id, image, ["sh", "-c", "x=a; while true; do x=$x$x; done"], memory_mb=16)
    outcome = outcome_of(stack, start(stack, acct.id, iid))
    assert outcome.status == "failed" and outcome.error == "killed: out of memory (limit 16 MB)"
    row = instance(stack, iid)
    assert [v["type"] for v in row.violations] == ["oom_killed"]
    assert row.exit_code == 137
    assert containers_of(docker_client, iid, stack) == []


def test_artifacts_are_copied_out_checked_and_stored(stack, docker_client, image):
    acct = stack.account()
    script = "mkdir -p /work/out/sub && echo result > /work/out/result.txt && echo deep > /work/out/sub/d.txt"
    iid = make_instance(stack, acct.id, image, ["sh", "-c", script], artifact_paths=["out", "missing"])
    assert outcome_of(stack, start(stack, acct.id, iid)).status == "completed"
    row = instance(stack, iid)
    stored = [a for a in row.artifacts if "store_key" in a]
    assert len(stored) == 1 and stored[0]["name"] == "out" and stored[0]["entries"] == 4
    assert [a for a in row.artifacts if a.get("error")] == [
        {"name": "missing", "path": "/work/missing", "error": "not found in the container"}]
    with stack.sessions() as session:
        artifact = session.scalars(select(Artifact).where(Artifact.instance_id == iid)).one()
    assert artifact.sha256 == stored[0]["sha256"] and artifact.size_bytes > 0
    store = ArtifactStore.from_settings(stack.settings)
    with store.open_artifact(artifact.store_key) as handle, tarfile.open(fileobj=io.BytesIO(handle.read())) as tar:
        assert tar.extractfile("out/result.txt").read() == b"result\n"
    assert containers_of(docker_client, iid, stack) == []


def test_the_orphan_sweep_removes_containers_whose_instance_has_ended(stack, docker_client, image):
    acct = stack.account()
    ended = make_instance(stack, acct.id, image, ["sleep", "60"], status="completed")
    live = make_instance(stack, acct.id, image, ["sleep", "60"], status="running")
    owner = owner_label(stack.settings)
    made = []
    for iid in (ended, live, 10_000_000 + ended):  # the last one's instance does not exist
        made.append(docker_client.containers.run(image, ["sleep", "60"], detach=True,
                                                 name=container_name(iid, stack.settings),
                                                 labels={"devops.instance": str(iid), "devops.owner": owner}))
    foreign = docker_client.containers.run(image, ["sleep", "60"], detach=True,
                                           labels={"devops.instance": str(ended), "devops.owner": "someone-else"})
    try:
        removed = ContainerActivities(stack.settings, stack.sessions, docker_client=docker_client).sweep_orphans_now()
        assert sorted(removed) == sorted([container_name(ended, stack.settings),
                                          container_name(10_000_000 + ended, stack.settings)])
        assert containers_of(docker_client, ended, stack) == []
        foreign.reload()  # another deployment's container with the same instance id is left alone
        assert [c.id for c in containers_of(docker_client, live, stack)] == [made[1].id]
    finally:
        for container in (made[1], foreign):
            container.remove(force=True)


def test_a_worker_killed_mid_run_resumes_the_execution_and_leaves_no_container(stack, docker_client, image,
                                                                                tmp_path):
    acct = stack.account()
    settings = stack.settings.model_copy(update={"task_queue": f"containers-{uuid.uuid4().hex[:8]}"})
    iid = make_instance(stack, acct.id, image, ["sh", "-c", "echo before; sleep 8; echo after"])
    first = worker_process(settings, tmp_path / "worker1.log")
    second = None
    try:
        handle = start(stack, acct.id, iid, task_queue=settings.task_queue)
        container = running_container(stack, docker_client, iid)
        wait_for(lambda: "before" in instance(stack, iid).logs, timeout=20, message="the first log line stored")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        time.sleep(1)
        second = worker_process(settings, tmp_path / "worker2.log")
        outcome = outcome_of(stack, handle, timeout=120)
        assert outcome.status == "completed", (tmp_path / "worker2.log").read_text()[-3000:]
        row = instance(stack, iid)
        assert row.container_id == container.id  # re-attached, never started a second one
        assert row.logs == "before\nafter\n"
        assert statuses(stack, iid) == ["pending", "provisioning", "running", "completed"]
        assert containers_of(docker_client, iid, stack) == []
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)


def test_a_queued_execution_waits_for_quota_then_runs(stack, docker_client, image):
    acct = stack.account()
    with stack.sessions.begin() as session:
        session.add(ResourceQuota(account_id=acct.id, max_concurrent=1))
    holder = make_instance(stack, acct.id, image, ["true"], status="running")  # holds the only slot
    iid = make_instance(stack, acct.id, image, ["sh", "-c", "echo ran"], status="queued")
    handle = start(stack, acct.id, iid)
    time.sleep(3)
    assert stack.infra.run(handle.query(ContainerExecutionWorkflow.status)) == "queued"
    assert instance(stack, iid).status == "queued"
    with stack.sessions.begin() as session:
        session.get(ContainerInstance, holder).status = "completed"
    assert outcome_of(stack, handle).status == "completed"
    assert statuses(stack, iid) == ["queued", "pending", "provisioning", "running", "completed"]
    assert instance(stack, iid).logs == "ran\n"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_the_callback_url_receives_the_signed_result(stack, docker_client, image):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.received.clear()
    try:
        acct = stack.account()
        iid = make_instance(stack, acct.id, image, ["sh", "-c", "exit 4"])
        with stack.sessions.begin() as session:
            session.get(ContainerInstance, iid).callback_url = f"http://127.0.0.1:{server.server_port}/hook"
        assert outcome_of(stack, start(stack, acct.id, iid)).status == "failed"
        assert len(_Receiver.received) == 1
        headers, body = _Receiver.received[0]
        key = callback_signing_key(stack.settings, acct.id)
        assert headers["X-Devops-Signature-256"] == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        payload = json.loads(body)
        assert payload["instance_id"] == iid and payload["status"] == "failed" and payload["exit_code"] == 4
        assert instance(stack, iid).callback_status == "delivered: HTTP 204"
    finally:
        server.shutdown()


def test_hitting_the_pids_limit_is_recorded_as_a_violation(stack, docker_client, image):
    acct = stack.account()
    script = "i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done; wait"
    iid = make_instance(stack, acct.id, image, ["sh", "-c", script], pids_limit=8)
    outcome = outcome_of(stack, start(stack, acct.id, iid))
    assert outcome.status == "failed"
    row = instance(stack, iid)
    assert "pids_limit" in [v["type"] for v in row.violations]
    assert "can't fork" in row.logs
