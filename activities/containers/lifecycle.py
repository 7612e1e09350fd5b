"""The container's life on the engine: plan, reserve quota, create and start; kill, remove, and
sweep away the containers of ended instances."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import docker.errors
import requests.exceptions
from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.containers.base import ContainerActivitiesBase, utc_now
from activities.containers.contract import (
    FINAL_STATUSES,
    QUOTA_NEVER_FITS,
    ContainerInstanceInput,
    ContainerPlan,
    ProvisionResult,
    ReserveResult,
    SweepOrphansInput,
    SweepOrphansResult,
    docker_error,
    spec_error,
)
from activities.containers.spec import ContainerSpec, container_name, create_kwargs, instance_labels
from activities.containers.usage import parse_docker_time
from db.models import ContainerInstance


class LifecycleActivities(ContainerActivitiesBase):
    """prepare, reserve_or_wait, provision, kill, remove and sweep_orphans."""

    # ---- prepare (a local activity: reads the row, no outside system) ---------------------

    @activity.defn(name="container_prepare")
    async def prepare(self, inp: ContainerInstanceInput) -> ContainerPlan:
        """What the workflow needs to plan the execution; fails non-retryably on a bad spec."""

        def work() -> ContainerPlan:
            with self._sessions() as session:
                instance = self._load(session, inp)
                spec = ContainerSpec.from_instance(instance)
                return ContainerPlan(status=instance.status, timeout_seconds=int(spec.timeout_seconds),
                                     heartbeat_timeout_seconds=self._settings.step_heartbeat_timeout_seconds,
                                     memory_mb=spec.memory_mb, artifact_count=len(spec.artifact_paths))

        return await asyncio.to_thread(work)

    # ---- reserve_or_wait -----------------------------------------------------------------

    @activity.defn(name="container_reserve_or_wait")
    async def reserve_or_wait(self, inp: ContainerInstanceInput) -> ReserveResult:
        """One try to reserve quota for a ``queued`` instance (the workflow sleeps between tries).
        An instance that could never fit fails with QuotaNeverFits."""
        from activities import container_quota

        def work() -> ReserveResult:
            with self._sessions.begin() as session:
                instance = self._load(session, inp)
                if instance.status != "queued":
                    return ReserveResult(reserved=instance.status in container_quota.HOLDING_STATUSES,
                                         status=instance.status)
                problems = container_quota.exceeds_limits(container_quota.quota_for(session, instance.account_id),
                                                          instance)
                if problems:
                    raise ApplicationError("; ".join(f"{name}: {why}" for name, why in problems),
                                           type=QUOTA_NEVER_FITS, non_retryable=True)
                reason = container_quota.try_reserve(session, instance)
                if reason is not None:
                    return ReserveResult(reserved=False, status="queued", reason=reason)
                instance.status = "queued"  # so that _set_status records the transition
                self._set_status(session, instance, "pending", reason="quota reserved")
                return ReserveResult(reserved=True, status="pending")

        return await asyncio.to_thread(work)

    # ---- provision -----------------------------------------------------------------------

    @activity.defn(name="container_provision")
    async def provision(self, inp: ContainerInstanceInput) -> ProvisionResult:
        """Resolve the image, create the container with the spec's limits, and start it.
        A container a previous try started is adopted; one it only created is replaced."""
        return await asyncio.to_thread(self._provision, inp)

    def _provision(self, inp: ContainerInstanceInput) -> ProvisionResult:
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            if instance.status in FINAL_STATUSES:
                raise spec_error(f"container instance {instance.id} has already ended ({instance.status})")
            spec = ContainerSpec.from_instance(instance)
            name = container_name(instance.id, self._settings)
            if instance.status not in ("provisioning", "running"):
                self._set_status(session, instance, "provisioning")
            instance.name = name
            labels = instance_labels(instance, spec, self._owner)
            host_id = instance.host_id
        with self._sessions() as session:
            instance = self._load(session, inp)
            secret_env = self._secrets(session, instance, spec)
        client = self._client(host_id)
        try:
            image = client.images.get(spec.image)
        except docker.errors.ImageNotFound:
            raise spec_error(f"image {spec.image!r} is not on the Docker host; pull or build it there first "
                             "(executions never pull)") from None
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise docker_error(f"look up image {spec.image!r}", exc) from None
        digests = image.attrs.get("RepoDigests") or []
        digest = digests[0] if digests else image.id

        try:
            container = self._container(client, inp.instance_id)
            if container is not None and container.attrs.get("State", {}).get("StartedAt", "").startswith("0001-"):
                # Created by a try that died before starting it: start over with this try's settings.
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
                container = None
            if container is None:
                env = {**spec.env, **secret_env}
                container = client.containers.create(**create_kwargs(spec, name, labels, env))
                container.start()
                container.reload()
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise docker_error(f"create and start container {name}", exc) from None

        started = parse_docker_time(container.attrs.get("State", {}).get("StartedAt")) or utc_now()
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.container_id = container.id
            instance.image_digest = digest
            instance.started_at = instance.started_at or started
            if instance.status not in FINAL_STATUSES:
                self._set_status(session, instance, "running", container_id=container.id[:12], image_digest=digest)
        return ProvisionResult(container_id=container.id, image_digest=digest)

    # ---- kill / remove -------------------------------------------------------------------

    @activity.defn(name="container_kill")
    async def kill(self, inp: ContainerInstanceInput) -> None:
        """Stop the container now (SIGKILL), keeping it so its log and exit can still be read."""

        def work() -> None:
            client = self._client(self._host_of(inp))
            container = self._container(client, inp.instance_id)
            if container is None:
                return
            try:
                container.kill()
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # not running any more
                    return
                raise docker_error(f"kill {container_name(inp.instance_id, self._settings)}", exc) from None

        await asyncio.to_thread(work)

    @activity.defn(name="container_remove")
    async def remove(self, inp: ContainerInstanceInput) -> None:
        """Force-remove the container and its anonymous volumes; already gone is fine."""

        def work() -> None:
            client = self._client(self._host_of(inp))
            try:
                client.api.remove_container(container_name(inp.instance_id, self._settings), force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation or ""):
                    return
                raise docker_error(f"remove {container_name(inp.instance_id, self._settings)}", exc) from None

        await asyncio.to_thread(work)

    # ---- orphans ---------------------------------------------------------------------------

    @activity.defn(name="container_sweep_orphans")
    async def sweep_orphans(self, inp: SweepOrphansInput) -> SweepOrphansResult:
        """Remove this deployment's labelled containers whose instance has ended or is gone."""
        return SweepOrphansResult(removed=await asyncio.to_thread(self.sweep_orphans_now, inp.host_id))

    def sweep_orphans_now(self, host_id: int | None = None) -> list[str]:
        client = self._client(host_id)
        containers = client.containers.list(all=True, filters={"label": [f"devops.owner={self._owner}",
                                                                          "devops.instance"]})
        ids: dict[int, Any] = {}
        for container in containers:
            with contextlib.suppress(ValueError, TypeError):
                ids[int(container.labels.get("devops.instance"))] = container
        if not ids:
            return []
        with self._sessions() as session:
            live = dict(session.execute(select(ContainerInstance.id, ContainerInstance.status)
                                        .where(ContainerInstance.id.in_(list(ids)))).all())
        removed = []
        for instance_id, container in ids.items():
            if live.get(instance_id) not in FINAL_STATUSES and instance_id in live:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            removed.append(container.name)
        return removed
