"""The Temporal worker: ``python worker.py [--labels a,b]``.

Without labels it serves the main task queue: every workflow, the bookkeeping local
activity and the step activities. With ``--labels`` it serves only the step activities of
pipelines whose ``runner_labels`` are exactly that set (see ``runner_task_queue``), so
steps can be sent to machines with special tools.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.a2a import A2ACallbackActivities
from activities.approvals import ApprovalActivities
from activities.bookkeeping import RunBookkeeping
from activities.containers import ContainerActivities
from activities.docker_hosts import DockerHostActivities
from activities.git_steps import GitStepActivities
from activities.integrations import IntegrationActivities, integration_activities
from activities.repositories import RepositoryActivities
from activities.rollouts import RolloutActivities
from activities.schedules import ScheduleActivities
from activities.step_registry import step_activity_methods
from activities.swarm import SwarmActivities
from activities.webhooks import WebhookActivities
from activities.workspaces import kill_orphaned_steps, sweep_workspaces
from db.session import make_engine, make_session_factory
from settings import Settings, get_settings
from workflows.a2a_callback import A2ACallbackWorkflow
from workflows.container_execution import ContainerExecutionWorkflow
from workflows.host_sync import HostSyncWorkflow
from workflows.integration_execution import IntegrationExecutionWorkflow
from workflows.pipeline_queue import PipelineQueueWorkflow
from workflows.pipeline_run import PipelineRunWorkflow
from workflows.repository_sync import RepositorySyncWorkflow, RepositoryWebhookWorkflow
from workflows.rollout import RolloutWorkflow
from workflows.scheduled_trigger import ScheduledTriggerWorkflow
from workflows.swarm_sync import SwarmSyncWorkflow
from workflows.task_queues import runner_task_queue
from workflows.webhook_dispatch import WebhookDispatchWorkflow

WORKFLOWS = [PipelineRunWorkflow, PipelineQueueWorkflow, ScheduledTriggerWorkflow, RepositorySyncWorkflow,
             RepositoryWebhookWorkflow, WebhookDispatchWorkflow, HostSyncWorkflow, ContainerExecutionWorkflow,
             SwarmSyncWorkflow, RolloutWorkflow, IntegrationExecutionWorkflow, A2ACallbackWorkflow]


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


def build_workers(client: Client, settings: Settings, labels: Sequence[str] = ()) -> list[Worker]:
    """The workers this process runs; tests call this with their own client and settings."""
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    git_steps = GitStepActivities(settings, sessions)
    bookkeeping = RunBookkeeping(sessions)
    schedules = ScheduleActivities(settings, sessions, client)
    approvals = ApprovalActivities(settings, sessions)
    webhooks = WebhookActivities(settings, sessions, client)
    repositories = RepositoryActivities(settings, sessions)
    containers = ContainerActivities(settings, sessions)
    docker_hosts = DockerHostActivities(settings, sessions)
    rollouts = RolloutActivities(settings, sessions)
    swarm = SwarmActivities(settings, sessions)
    # every step type's activity from the registry (activities.step_registry), plus their helpers
    step_activities = step_activity_methods(settings, sessions, [git_steps])
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=32)
    common = {"max_heartbeat_throttle_interval": timedelta(seconds=1),
              "default_heartbeat_throttle_interval": timedelta(seconds=1)}
    if labels:
        return [Worker(client, task_queue=runner_task_queue(settings.task_queue, labels),
                       activities=step_activities, **common)]
    return [
        Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            # The workflows are sandboxed by definition; this worker runs them unsandboxed unless
            # DEVOPS_WORKFLOW_SANDBOX=true (the sandbox cost ~30 ms CPU per run: README, How it works).
            **({} if settings.workflow_sandbox else {"workflow_runner": UnsandboxedWorkflowRunner()}),
            activities=[*step_activities, bookkeeping.record_run_progress, approvals.open_gate,
                        approvals.record_decision, schedules.start_scheduled_run, schedules.await_run,
                        webhooks.dispatch_webhook_event,
                        repositories.sync_repositories, repositories.configure_webhook, repositories.delete_webhook,
                        git_steps.set_commit_status, docker_hosts.sync_host, swarm.sync_cluster,
                        *container_activities(containers), *rollout_activities(rollouts),
                        *integration_activities(IntegrationActivities(settings, sessions)),
                        A2ACallbackActivities(settings, sessions).deliver],
            activity_executor=executor,
            **common,
        )
    ]


def container_activities(containers: ContainerActivities) -> list:
    return [containers.prepare, containers.reserve_or_wait, containers.provision, containers.wait_for_exit,
            containers.collect_artifacts, containers.kill, containers.remove, containers.finish,
            containers.sweep_orphans]


def rollout_activities(rollouts: RolloutActivities) -> list:
    return [rollouts.load, rollouts.record, rollouts.prepare, rollouts.ensure_service, rollouts.scale_service,
            rollouts.remove_service, rollouts.wait_healthy, rollouts.update_stable, rollouts.wait_update,
            rollouts.measure, rollouts.switch_traffic, rollouts.create_for_step]


async def sweep_container_orphans(settings: Settings) -> None:
    """Once at start: remove our labelled containers whose execution has ended (a worker that
    died mid-run may have left them); an unreachable engine is only logged."""
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    try:
        removed = await asyncio.to_thread(ContainerActivities(settings, sessions).sweep_orphans_now)
    except Exception as exc:  # noqa: BLE001 - a sweep must never stop the worker from starting
        logging.getLogger("worker").warning("container orphan sweep skipped: %s", exc)
        return
    if removed:
        logging.getLogger("worker").info("removed orphaned containers: %s", ", ".join(removed))


def kill_orphans(settings: Settings) -> None:
    """Kill the step processes that workers which are gone left running on this host (a worker
    killed mid-step, or one whose run was cancelled while it was down); never a live worker's."""
    log = logging.getLogger("worker")
    try:
        killed = kill_orphaned_steps(settings)
    except Exception as exc:  # noqa: BLE001 - a sweep must never stop the worker from starting
        log.warning("orphaned step sweep failed: %s", exc)
        return
    for record in killed:
        log.info("killed the orphaned process group %s of run %s step %s attempt %s (its worker, pid %s, is gone)",
                 record["pgid"], record.get("run_id", "?"), record.get("step_id", "?"), record.get("attempt", "?"),
                 record.get("worker_pid", "?"))


async def sweep_workspaces_forever(settings: Settings) -> None:
    """At start and every ``workspace_sweep_interval_seconds``: remove the workspaces of runs
    finished longer than ``workspace_retention_hours`` ago (see ``activities.workspaces``), and
    kill step processes whose worker is gone (a worker sharing this host died since)."""
    log = logging.getLogger("worker")
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    while True:
        await asyncio.to_thread(kill_orphans, settings)
        try:
            removed = await asyncio.to_thread(sweep_workspaces, settings, sessions)
            if removed:
                log.info("removed the workspaces of finished runs: %s", ", ".join(map(str, removed)))
        except Exception as exc:  # noqa: BLE001 - a failed sweep is retried at the next interval
            log.warning("workspace sweep failed: %s", exc)
        await asyncio.sleep(settings.workspace_sweep_interval_seconds)


async def run_worker(settings: Settings, labels: Sequence[str] = ()) -> None:
    # Before anything else (even reaching Temporal): the steps a killed worker left running here
    # would otherwise run on until their retry, or forever if their run was cancelled meanwhile.
    await asyncio.to_thread(kill_orphans, settings)
    client = await connect(settings)
    workers = build_workers(client, settings, labels)
    sweep = asyncio.create_task(sweep_container_orphans(settings)) if not labels else None
    janitor = asyncio.create_task(sweep_workspaces_forever(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    queues = ", ".join(w.task_queue for w in workers)
    logging.getLogger("worker").info("worker polling %s on %s", queues, settings.temporal_address)
    done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task in tasks and task.exception():
            raise task.exception()  # type: ignore[misc]
    await asyncio.gather(*(w.shutdown() for w in workers))
    if sweep is not None and not sweep.done():
        sweep.cancel()
    janitor.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="", help="comma-separated runner labels to serve")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run_worker(get_settings(), [x for x in args.labels.split(",") if x]))


if __name__ == "__main__":
    main()
