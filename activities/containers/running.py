"""Following a started container until it exits: its log, its usage samples, then its exit
code and the limits it hit."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import docker.errors
import requests.exceptions
from temporalio import activity

from activities.containers.base import ContainerActivitiesBase
from activities.containers.contract import ContainerExit, ContainerInstanceInput, spec_error
from activities.containers.logs import CappedLog, LogFollower
from activities.containers.spec import ContainerSpec, container_name
from activities.containers.usage import STATS_SECONDS, UsageTracker, oom_reported_late, parse_docker_time
from activities.steps import StepInput, StepLogWriter
from domain.masking import Masker


class RunningActivities(ContainerActivitiesBase):
    """wait_for_exit and what it saves along the way."""

    @activity.defn(name="container_wait_for_exit")
    async def wait_for_exit(self, inp: ContainerInstanceInput) -> ContainerExit:
        """Follow the container until it exits: its log (masked) into the instance (capped at
        100 KB) and into the step's log, stats samples into usage; then the exit code, usage and
        violations. A retry after a worker crash re-attaches to the same container."""
        with self._sessions() as session:
            instance = self._load(session, inp)
            spec = ContainerSpec.from_instance(instance)
            secret_env = self._secrets(session, instance, spec)
            host_id, run_id, step_id, attempt = instance.host_id, instance.run_id, instance.step_id, instance.attempt
        # building a masker of large secrets takes a while: off the event loop, which heartbeats
        masker = await asyncio.to_thread(Masker, list(secret_env.values()))
        client = self._client(host_id)
        container = await asyncio.to_thread(self._container, client, inp.instance_id)
        if container is None:
            raise spec_error(f"container {container_name(inp.instance_id, self._settings)} is gone: it was removed from the "
                             "Docker host while it ran")
        details = activity.info().heartbeat_details
        forwarded = int(details[0]) if details else 0
        step_log: StepLogWriter | None = None
        if run_id is not None and step_id and attempt is not None:
            step_inp = StepInput(run_id=run_id, account_id=inp.account_id, pipeline_id=0, step_id=step_id,
                                 step_name=step_id, attempt=attempt, params={})
            step_log = await asyncio.to_thread(StepLogWriter, self._sessions, step_inp, masker,
                                               self._settings.step_log_cap_bytes)
        follower = LogFollower(container, masker, step_log, forwarded)
        usage = UsageTracker()
        stats_task = asyncio.create_task(self._sample_stats(container, usage))
        try:
            await follower.run(lambda: self._save_logs(inp, follower.log, usage))
        except asyncio.CancelledError:
            follower.close()
            stats_task.cancel()
            await asyncio.shield(asyncio.to_thread(self._save_logs, inp, follower.log, usage, True))
            raise
        finally:
            follower.close()
            stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stats_task
        return await asyncio.to_thread(self._record_exit, inp, container, spec, follower, usage)

    async def _sample_stats(self, container: Any, usage: UsageTracker) -> None:
        while True:
            try:
                stats = await asyncio.to_thread(container.stats, stream=False, one_shot=True)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                stats = {}
            usage.sample(stats)
            await asyncio.sleep(STATS_SECONDS)

    def _save_logs(self, inp: ContainerInstanceInput, log: CappedLog, usage: UsageTracker,
                   force: bool = False) -> None:
        if not (log.changed or force):
            return
        log.changed = False
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.logs = log.text()
            instance.logs_truncated = log.truncated
            if usage.samples:
                instance.usage = usage.as_dict()

    def _record_exit(self, inp: ContainerInstanceInput, container: Any, spec: ContainerSpec,
                     follower: LogFollower, usage: UsageTracker) -> ContainerExit:
        container.reload()
        state = container.attrs.get("State", {})
        started, finished = parse_docker_time(state.get("StartedAt")), parse_docker_time(state.get("FinishedAt"))
        duration = round((finished - started).total_seconds(), 3) if started and finished else None
        oom = bool(state.get("OOMKilled"))
        exit_code = state.get("ExitCode")
        if exit_code == 137 and not oom:
            oom = oom_reported_late(container, started)
        violations: list[dict[str, Any]] = []
        if oom:
            violations.append({"type": "oom_killed",
                               "message": f"killed: out of memory (limit {spec.memory_mb} MB)"})
        if follower.fork_failures or usage.values["pids_peak"] >= spec.pids_limit:
            violations.append({"type": "pids_limit",
                               "message": f"the process limit of {spec.pids_limit} was reached"})
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.logs = follower.log.text()
            instance.logs_truncated = follower.log.truncated
            instance.exit_code = exit_code
            instance.usage = usage.as_dict(duration_seconds=duration)
            instance.violations = violations
            for violation in violations:
                self._event(session, instance, "violation", violation, key=f"violation:{violation['type']}")
        return ContainerExit(exit_code=exit_code, oom_killed=oom, violations=[v["type"] for v in violations])
