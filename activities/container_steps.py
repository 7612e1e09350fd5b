"""Pipeline steps that run in a container, and the artifact steps (issue 5 §3).

``run_tests`` and ``custom`` steps with ``with.executor: docker`` run as a child
``ContainerExecutionWorkflow``: :meth:`ContainerStepActivities.prepare` writes the
``ContainerInstance`` (the step's run, step and attempt on it, so its log lines become the step's
log), the workflow starts the child, and :meth:`ContainerStepActivities.collect` turns the
instance's end into the step's result and reads ``$DEVOPS_OUTPUT``.

The run's workspace is bind-mounted at ``/workspace`` (the only bind mount a step gets without
the account policy: it is ours), ``working_directory`` is inside it, and ``$DEVOPS_OUTPUT`` works
as on the shell executor. The container runs as the user that owns the workspace (the account's
step uid when the worker is root, see ``activities.workspaces``; never 0 just because the worker is),
unless the template or ``with.user`` says otherwise, with every capability dropped,
no-new-privileges and a read-only root filesystem like any container here.

A secret reaches a container only as a whole environment value (``env: {TOKEN: ${{ secrets.T }}}``),
stored on the instance as a *name* (``secret_env``) and resolved when the container is created;
a secret inside a longer value, or in the command, is refused: the instance's spec is shown by
the API and must hold no secret value.

``upload_artifact`` / ``download_artifact`` move files between steps and runs through the
artifact store, with the store's archive checks (no absolute paths, no ``..``, no links out,
size and entry caps) on the way in and out.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio import activity

from activities import container_quota
from activities.containers import container_name
from activities.steps import (
    StepActivities,
    StepInput,
    StepResult,
    _inside,
    _read_outputs,
    attempt_id,
    step_failed,
)
from activities.workspaces import STEP_STATE_DIR, container_user, fresh_file_beneath, hand_over, step_user
from adapters.artifact_store import ArtifactError, ArtifactNotFound, ArtifactStore
from db.models import Artifact, ContainerInstance, ContainerTemplate, PipelineRun
from domain.masking import Masker
from workflows.container_execution import container_workflow_id

WORKSPACE_MOUNT = "/workspace"
# ``with`` keys a docker step may set on the container (the rest of ``with`` is the step's own).
SPEC_OVERRIDES = ("image", "cpu_limit", "memory_mb", "pids_limit", "storage_mb", "network_mode", "user",
                  "artifact_paths", "timeout_seconds", "entrypoint")
ARTIFACT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class ContainerStepPlan:
    instance_id: int
    workflow_id: str
    queued: bool = False


@dataclass
class ContainerStepCollectInput:
    step: StepInput
    instance_id: int


class ContainerStepActivities(StepActivities):
    """Shares the secret, masking and workspace plumbing of the shell steps."""

    # ---- executor: docker ----------------------------------------------------------------

    @activity.defn(name="step_container_prepare")
    async def prepare(self, inp: StepInput) -> ContainerStepPlan:
        return await asyncio.to_thread(self._prepare_instance, inp)

    def _prepare_instance(self, inp: StepInput) -> ContainerStepPlan:
        from services.container_specs import check_spec, hardened, normalized_spec, resolve_spec
        from services.containers import policy_view, template_spec

        params = inp.params
        with self._sessions() as session:
            existing = session.scalar(select(ContainerInstance).where(
                ContainerInstance.run_id == inp.run_id, ContainerInstance.step_id == inp.step_id,
                ContainerInstance.attempt == inp.attempt, ContainerInstance.account_id == inp.account_id))
            if existing is not None:  # a retry of this activity: the first try's instance
                return ContainerStepPlan(existing.id, container_workflow_id(existing.id), existing.status == "queued")
            template = self._template(session, inp.account_id, params)
            # The container runs as the workspace's owner (the step uid), so the workspace stays
            # 0700 and still takes what the container writes.
            user = step_user(self._settings, inp.account_id)
            workspace = self.workspace(inp.run_id, inp.account_id)
            cwd = _inside(workspace, params.get("working_directory", "."), "working_directory")
            cwd.mkdir(parents=True, exist_ok=True)
            output_file = fresh_file_beneath(workspace, f"{STEP_STATE_DIR}/output-{inp.step_id}-{inp.attempt}", user)
            hand_over(workspace, user)

            env, secret_env = self._container_env(inp)
            env.update({"DEVOPS_OUTPUT": f"{WORKSPACE_MOUNT}/.devops/{output_file.name}",
                        "DEVOPS_WORKSPACE": WORKSPACE_MOUNT, "CI": "true",
                        "DEVOPS_RUN_ID": str(inp.run_id), "DEVOPS_STEP_ID": inp.step_id,
                        "DEVOPS_STEP_ATTEMPT_ID": attempt_id(inp)})
            overrides: dict[str, Any] = {k: params[k] for k in SPEC_OVERRIDES if k in params}
            overrides["command"] = self._command(inp)
            overrides["env"] = env
            overrides["secret_env"] = secret_env
            overrides["working_dir"] = f"{WORKSPACE_MOUNT}/{cwd.relative_to(workspace)}".rstrip("/.") or WORKSPACE_MOUNT
            if "user" not in overrides and (template is None or template.user == "65534:65534"):
                overrides["user"] = container_user(self._settings, inp.account_id)
            spec = resolve_spec(template_spec(template) if template else None, overrides)
            problems = check_spec(spec, policy_view(session, inp.account_id),
                                  allow_private_registries=self._settings.private_targets_allowed)
            if problems:
                raise step_failed("the container settings are not valid: " + "; ".join(
                    f"{'.'.join(str(p) for p in problem['loc'][1:])}: {problem['msg']}" for problem in problems))
            spec = normalized_spec(spec)
            # ours, after the policy check: a step always gets its run's workspace
            spec["bind_mounts"] = [*spec.get("bind_mounts", []),
                                   {"source": str(workspace), "target": WORKSPACE_MOUNT, "read_only": False}]
            row = ContainerInstance(
                account_id=inp.account_id, template_id=template.id if template else None, status="queued",
                run_id=inp.run_id, step_id=inp.step_id, attempt=inp.attempt, image=spec["image"],
                spec=hardened(spec, template.id if template else None), reserved_cpu=spec["cpu_limit"],
                reserved_memory_mb=spec["memory_mb"], reserved_storage_mb=spec["storage_mb"],
                timeout_seconds=spec["timeout_seconds"],
            )
            session.add(row)
            session.flush()
            row.name = container_name(row.id, self._settings)
            row.workflow_id = container_workflow_id(row.id)
            own = container_quota.exceeds_limits(container_quota.quota_for(session, inp.account_id), row)
            if own:
                session.rollback()
                raise step_failed("the container can never fit the account's quota: " + "; ".join(r for _, r in own))
            reason = container_quota.try_reserve(session, row)
            session.commit()
            return ContainerStepPlan(row.id, row.workflow_id, queued=reason is not None)

    @staticmethod
    def _template(session: Session, account_id: int, params: dict[str, Any]) -> ContainerTemplate | None:
        ref = params.get("template")
        if ref is None:
            if not params.get("image"):
                raise step_failed("a step with `executor: docker` needs `with.image` or `with.template`")
            return None
        query = select(ContainerTemplate).where(ContainerTemplate.account_id == account_id)
        query = query.where(ContainerTemplate.id == ref) if isinstance(ref, int) else query.where(
            ContainerTemplate.name == str(ref))
        template = session.scalar(query)
        if template is None:
            raise step_failed(f"the account has no container template {ref!r}")
        return template

    def _command(self, inp: StepInput) -> list[str]:
        command = inp.params.get("command")
        prefix = inp.secret_placeholder_prefix
        if isinstance(command, str):
            if not command.strip():
                raise step_failed("`with.command` is empty")
            argv = ["sh", "-e", "-c", command]
        elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
            argv = list(command)
        else:
            raise step_failed("a step with `executor: docker` needs `with.command`: a shell command or an argv list")
        if prefix and any(prefix in part for part in argv):
            raise step_failed("a secret may not be part of a container's command; pass it as an environment "
                              "value (`with.env: {NAME: ${{ secrets.X }}}`) and read $NAME")
        return argv

    def _container_env(self, inp: StepInput) -> tuple[dict[str, str], dict[str, str]]:
        """Plain env values, and env name -> secret name for values that are exactly one secret."""
        from activities.steps import _env_text

        raw = {**inp.env, **(inp.params.get("env") or {})}
        if not isinstance(inp.params.get("env") or {}, dict):
            raise step_failed("`with.env` must map environment variable names to values")
        prefix = inp.secret_placeholder_prefix
        plain: dict[str, str] = {}
        secret_env: dict[str, str] = {}
        for key, value in raw.items():
            text = _env_text(value)
            if prefix and prefix in text:
                name = text.removeprefix(prefix).removesuffix("__")
                if text.startswith(prefix) and text.endswith("__") and name in inp.secret_names:
                    secret_env[str(key)] = name
                    continue
                raise step_failed(f"env {key}: in a container a secret must be the whole value "
                                  f"(`{key}: ${{{{ secrets.NAME }}}}`), not part of a longer text")
            plain[str(key)] = text
        return plain, secret_env

    @activity.defn(name="step_container_collect")
    async def collect(self, inp: ContainerStepCollectInput) -> StepResult:
        return await asyncio.to_thread(self._collect, inp)

    def _collect(self, inp: ContainerStepCollectInput) -> StepResult:
        step = inp.step
        with self._sessions() as session:
            row = session.scalar(select(ContainerInstance).where(ContainerInstance.id == inp.instance_id,
                                                                 ContainerInstance.account_id == step.account_id))
            if row is None:
                raise step_failed(f"container instance {inp.instance_id} is gone")
            status, exit_code, error, timeout = row.status, row.exit_code, row.error, row.timeout_seconds
        masker = Masker(self._load_secrets(step).values()) if step.secret_names else Masker(())
        output_file = self.workspace(step.run_id) / ".devops" / f"output-{step.step_id}-{step.attempt}"
        outputs = masker.mask_value(_read_outputs(output_file))
        outputs["container_instance_id"] = str(inp.instance_id)
        if status == "completed":
            return StepResult(outputs=outputs)
        if status == "timeout":
            raise step_failed(f"the container timed out after {timeout} s (instance {inp.instance_id})", outputs)
        if status == "cancelled":
            raise step_failed(f"the container was cancelled (instance {inp.instance_id})", outputs)
        if status == "failed":
            why = error or (f"exited with code {exit_code}" if exit_code is not None else "failed")
            raise step_failed(f"the container {why} (instance {inp.instance_id})", outputs)
        raise step_failed(f"the container ended in an unexpected state '{status}' (instance {inp.instance_id})",
                          outputs)

    # ---- artifacts --------------------------------------------------------------------------

    @activity.defn(name="step_upload_artifact")
    async def upload_artifact(self, inp: StepInput) -> StepResult:
        """``with: {name, path}``: a file or directory of the workspace, stored as a checked tar."""
        return await asyncio.to_thread(self._upload, inp)

    def _upload(self, inp: StepInput) -> StepResult:
        name = _artifact_name(inp.params.get("name"))
        workspace = self.workspace(inp.run_id, inp.account_id)
        source = _inside(workspace, inp.params.get("path", "."), "path")
        if not source.exists():
            raise step_failed(f"`with.path` {inp.params.get('path')!r} does not exist in the workspace")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            _add_tree(tar, source, workspace)
        buffer.seek(0)
        store = ArtifactStore.from_settings(self._settings)
        key = f"runs/{inp.run_id}/{name}.tar"
        try:
            stored = store.store_tar(buffer, key)
        except ArtifactError as exc:
            raise step_failed(f"artifact '{name}' refused: {exc}") from None
        with self._sessions() as session:
            row = session.scalar(select(Artifact).where(Artifact.run_id == inp.run_id, Artifact.name == name,
                                                        Artifact.account_id == inp.account_id))
            if row is None:
                row = Artifact(account_id=inp.account_id, run_id=inp.run_id, name=name, store_key=key)
                session.add(row)
            row.step_id, row.size_bytes, row.sha256, row.entries = inp.step_id, stored.size, stored.sha256, stored.entries
            session.commit()
            artifact_id = row.id
        return StepResult(outputs={"artifact_id": str(artifact_id), "name": name, "size": str(stored.size),
                                   "sha256": stored.sha256, "entries": str(stored.entries)})

    @activity.defn(name="step_download_artifact")
    async def download_artifact(self, inp: StepInput) -> StepResult:
        """``with: {name, run_id?, path?}``: extract an artifact of this run (or another run of
        the account) into the workspace, with the store's checks."""
        return await asyncio.to_thread(self._download, inp)

    def _download(self, inp: StepInput) -> StepResult:
        name = _artifact_name(inp.params.get("name"))
        source_run = inp.params.get("run_id", inp.run_id)
        try:
            source_run = int(source_run)
        except (TypeError, ValueError):
            raise step_failed("`with.run_id` must be a run id") from None
        with self._sessions() as session:
            row = session.scalar(
                select(Artifact).join(PipelineRun, PipelineRun.id == Artifact.run_id)
                .where(Artifact.run_id == source_run, Artifact.name == name, Artifact.account_id == inp.account_id,
                       PipelineRun.account_id == inp.account_id))
            if row is None:
                raise step_failed(f"run {source_run} has no artifact named '{name}'")
            key = row.store_key
        workspace = self.workspace(inp.run_id, inp.account_id)
        dest = _inside(workspace, inp.params.get("path", "."), "path")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            files = ArtifactStore.from_settings(self._settings).extract_to(key, dest)
        except ArtifactNotFound:
            raise step_failed(f"artifact '{name}' of run {source_run} is missing from the store") from None
        except ArtifactError as exc:
            raise step_failed(f"artifact '{name}' refused: {exc}") from None
        return StepResult(outputs={"path": str(dest.relative_to(workspace)) or ".", "files": str(len(files))})


def _artifact_name(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 100 or not set(value) <= ARTIFACT_NAME_CHARS \
            or value.startswith("."):
        raise step_failed("`with.name` must be 1-100 letters, digits, '.', '_' or '-', not starting with '.'")
    return value


def _add_tree(tar: tarfile.TarFile, source: Path, workspace: Path) -> None:
    """Files and directories under ``source`` with names relative to it; a link is refused."""
    base = source if source.is_dir() else source.parent
    paths = [source] if source.is_file() else sorted(source.rglob("*"))
    for path in paths:
        if path.is_symlink():
            raise step_failed(f"{path.relative_to(workspace)} is a symbolic link; artifacts hold files and "
                              "directories only")
        if path.is_file() or path.is_dir():
            tar.add(path, arcname=str(path.relative_to(base)), recursive=False)
