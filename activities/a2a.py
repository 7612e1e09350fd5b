"""Delivering an A2A callback: one signed POST per attempt; the workflow's retry policy
(workflows/a2a_callback.py) repeats it on unreachable / 5xx / 429."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.containers.callbacks import callback_signing_key, container_payload, signing_key
from activities.steps import refuse_private_target
from adapters.secret_backends import SecretResolutionError, resolve_secrets
from db.models import ContainerInstance, PipelineRun
from services import a2a
from settings import Settings


@dataclass
class DeliverCallbackInput:
    kind: str  # "run" (PipelineRun.a2a_callback_*) | "container" (ContainerInstance.callback_*)
    target_id: int
    account_id: int


@dataclass
class Prepared:
    url: str | None = None
    body: bytes = b""
    key: bytes = b""
    status: str | None = None  # set when nothing is to be sent (and why)
    event: str = "pipeline_run.finished"


FINAL = ("delivered", "failed", "gave up")


class A2ACallbackActivities:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._http = http_client

    @activity.defn(name="a2a_deliver_callback")
    async def deliver(self, inp: DeliverCallbackInput) -> str:
        """POST the signed body; the outcome lands in the row's ``a2a_callback_status``."""
        prepared = await asyncio.to_thread(self._prepare, inp)
        if prepared.url is None:
            return prepared.status or "not sent"
        info = activity.info()
        attempts = self._settings.a2a_callback_max_attempts
        try:
            status = await self._post(inp, prepared)
        except ApplicationError as exc:
            if info.attempt >= attempts:
                status = f"gave up after {info.attempt} attempts: {exc.message}"
            else:
                await asyncio.to_thread(self._record, inp, f"retrying (attempt {info.attempt}): {exc.message}")
                raise
        await asyncio.to_thread(self._record, inp, status)
        return status

    def _prepare(self, inp: DeliverCallbackInput) -> Prepared:
        with self._sessions.begin() as session:
            if inp.kind == "container":
                return self._prepare_container(session, inp)
            run = session.get(PipelineRun, inp.target_id)
            if run is None or run.account_id != inp.account_id or not run.a2a_callback_url:
                return Prepared(status="not sent: no callback")
            if (run.a2a_callback_status or "").startswith(FINAL):
                return Prepared(status=run.a2a_callback_status)
            key = callback_signing_key(self._settings, run.account_id)
            if run.a2a_callback_secret:
                try:
                    key = resolve_secrets(session, self._settings, run.account_id,
                                          [run.a2a_callback_secret])[run.a2a_callback_secret].encode()
                except SecretResolutionError as exc:
                    run.a2a_callback_status = f"not sent: {exc}"[:100]
                    return Prepared(status=run.a2a_callback_status)
            return Prepared(url=run.a2a_callback_url, body=a2a.run_payload(run, self._settings), key=key)

    def _prepare_container(self, session: Session, inp: DeliverCallbackInput) -> Prepared:
        instance = session.get(ContainerInstance, inp.target_id)
        if instance is None or instance.account_id != inp.account_id or not instance.callback_url:
            return Prepared(status="not sent: no callback")
        if (instance.callback_status or "").startswith(FINAL):
            return Prepared(status=instance.callback_status)
        key = signing_key(session, self._settings, instance)
        if isinstance(key, str):
            instance.callback_status = key
            return Prepared(status=key)
        return Prepared(url=instance.callback_url, body=container_payload(instance), key=key,
                        event="container.finished")

    async def _post(self, inp: DeliverCallbackInput, prepared: Prepared) -> str:
        url = prepared.url or ""
        if not self._settings.private_targets_allowed:
            try:
                await refuse_private_target(url)
            except ApplicationError as exc:
                return f"failed: refused: {exc.message}"
        headers = {"Content-Type": "application/json", "User-Agent": "devops-orchestrator",
                   "X-Devops-Event": prepared.event, "X-Devops-Delivery": f"{inp.kind}-{inp.target_id}",
                   "X-Devops-Signature-256": a2a.sign(prepared.key, prepared.body)}
        client = self._http or httpx.AsyncClient()
        try:
            response = await client.post(url, content=prepared.body, headers=headers, timeout=30,
                                         follow_redirects=False)
        except httpx.HTTPError as exc:
            raise ApplicationError(f"unreachable: {type(exc).__name__}", type="CallbackUnreachable") from None
        finally:
            if self._http is None:
                await client.aclose()
        code = response.status_code
        if code >= 500 or code == 429:
            raise ApplicationError(f"HTTP {code}", type="CallbackServerError")
        if code >= 300:
            return f"failed: HTTP {code}"
        return f"delivered: HTTP {code}"

    def _record(self, inp: DeliverCallbackInput, status: str) -> None:
        with self._sessions.begin() as session:
            model = ContainerInstance if inp.kind == "container" else PipelineRun
            row = session.get(model, inp.target_id)
            if row is None or row.account_id != inp.account_id:
                return
            if isinstance(row, ContainerInstance):
                row.callback_status = status[:100]
            else:
                row.a2a_callback_status = status[:100]
