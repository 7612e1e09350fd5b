"""Copying a stopped container's artifact paths out as checked tars into the artifact store."""

from __future__ import annotations

import asyncio
import posixpath
import re
from typing import Any

import docker.errors
import requests.exceptions
from sqlalchemy import select
from temporalio import activity

from activities.containers.base import ContainerActivitiesBase
from activities.containers.contract import (
    HEARTBEAT_SECONDS,
    CollectArtifactsResult,
    ContainerInstanceInput,
    docker_error,
)
from activities.containers.spec import ContainerSpec
from adapters.artifact_store import UnsafeArchive
from db.models import Artifact

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ArtifactActivities(ContainerActivitiesBase):
    """collect_artifacts."""

    @activity.defn(name="container_collect_artifacts")
    async def collect_artifacts(self, inp: ContainerInstanceInput) -> CollectArtifactsResult:
        """Copy each artifact path out of the (stopped) container as a tar, check it and store
        it; a refused or missing path is recorded on the instance and is not a failure."""
        work = asyncio.ensure_future(asyncio.to_thread(self._collect_artifacts, inp))
        while not (await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS))[0]:
            activity.heartbeat()
        return work.result()

    def _collect_artifacts(self, inp: ContainerInstanceInput) -> CollectArtifactsResult:
        with self._sessions() as session:
            instance = self._load(session, inp)
            spec = ContainerSpec.from_instance(instance)
            host_id, run_id, step_id = instance.host_id, instance.run_id, instance.step_id
        result = CollectArtifactsResult()
        if not spec.artifact_paths:
            return result
        client = self._client(host_id)
        container = self._container(client, inp.instance_id)
        listed: list[dict[str, Any]] = []
        for index, path in enumerate(spec.artifact_paths):
            full = path if path.startswith("/") else posixpath.join(spec.working_dir, path)
            base = _SAFE_NAME.sub("_", posixpath.basename(posixpath.normpath(full))).strip("._") or "root"
            key = f"accounts/{inp.account_id}/containers/{inp.instance_id}/{index}-{base}.tar"
            entry: dict[str, Any] = {"name": path, "path": full}
            if container is None:
                entry["error"] = "the container was gone before its artifacts were copied"
                result.missing += 1
                listed.append(entry)
                continue
            try:
                bits, _stat = container.get_archive(full)
                stored = self._store.store_tar(bits, key)
            except docker.errors.NotFound:
                entry["error"] = "not found in the container"
                result.missing += 1
                listed.append(entry)
                continue
            except UnsafeArchive as exc:
                entry["error"] = f"refused: {exc}"
                result.refused += 1
                listed.append(entry)
                continue
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise docker_error(f"copy {full} out of the container", exc) from None
            with self._sessions.begin() as session:
                row = session.scalar(select(Artifact).where(Artifact.instance_id == inp.instance_id,
                                                            Artifact.store_key == key))
                if row is None:
                    row = Artifact(account_id=inp.account_id, instance_id=inp.instance_id, run_id=run_id,
                                   step_id=step_id, name=path, store_key=key)
                    session.add(row)
                row.size_bytes, row.sha256, row.entries = stored.size, stored.sha256, stored.entries
                session.flush()
                entry.update({"id": row.id, "store_key": key, "size_bytes": stored.size, "sha256": stored.sha256,
                              "entries": stored.entries})
            result.stored += 1
            listed.append(entry)
        with self._sessions.begin() as session:
            instance = self._load(session, inp)
            instance.artifacts = listed
            for entry in listed:
                kind = "artifact_stored" if "store_key" in entry else "artifact_not_stored"
                self._event(session, instance, kind, entry, key=f"artifact:{entry['path']}"[:100])
        return result
