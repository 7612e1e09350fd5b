"""Ending an execution: the final status, then the signed ``container.finished`` callback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.containers.base import ContainerActivitiesBase, utc_now
from activities.containers.contract import FINAL_STATUSES, FinishContainerInput, FinishContainerResult
from activities.containers.spec import ContainerSpec
from activities.steps import refuse_private_target
from adapters.secret_backends import SecretResolutionError, resolve_secrets
from db.models import ContainerInstance
from settings import Settings


class CallbackActivities(ContainerActivitiesBase):
    """finish: the final status and the callback to the instance's ``callback_url``."""

    @activity.defn(name="container_finish")
    async def finish(self, inp: FinishContainerInput) -> FinishContainerResult:
        """Record the final status (and its event), then POST the result to the instance's
        ``callback_url``, signed with ``X-Devops-Signature-256: sha256=HMAC-SHA256(key, body)``.
        The key is the value of the account secret named by ``spec.callback_secret`` when set,
        else ``callback_signing_key(settings, account_id)``."""
        body, url, key = await asyncio.to_thread(self._finish_row, inp)
        if not url or not inp.send_callback:  # sent by A2ACallbackWorkflow (workflows/a2a_callback.py)
            return FinishContainerResult()
        status = await self._send_callback(inp, url, key, body)
        await asyncio.to_thread(self._record_callback, inp, status)
        return FinishContainerResult(callback_status=status)

    def _finish_row(self, inp: FinishContainerInput) -> tuple[bytes, str | None, bytes]:
        with self._sessions.begin() as session:
            instance = self._load(session, inp)  # type: ignore[arg-type]
            if instance.status not in FINAL_STATUSES:
                instance.error = inp.error
                if inp.exit_code is not None:
                    instance.exit_code = inp.exit_code
                instance.finished_at = utc_now()
                self._set_status(session, instance, inp.status, error=inp.error, exit_code=instance.exit_code)
            if not instance.callback_url or (instance.callback_status or "").startswith("delivered"):
                return b"", None, b""
            key = signing_key(session, self._settings, instance)
            if isinstance(key, str):
                instance.callback_status = key
                return b"", None, b""
            return container_payload(instance), instance.callback_url, key

    async def _send_callback(self, inp: FinishContainerInput, url: str, key: bytes, body: bytes) -> str:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            return "refused: not an http(s) URL"
        if not self._settings.private_targets_allowed:
            try:
                await refuse_private_target(url)
            except ApplicationError as exc:
                return f"refused: {exc.message}"[:100]
        headers = {"Content-Type": "application/json", "User-Agent": "devops-orchestrator",
                   "X-Devops-Event": "container.finished", "X-Devops-Delivery": f"container-{inp.instance_id}",
                   "X-Devops-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()}
        client = self._http or httpx.AsyncClient()
        last_try = activity.info().attempt >= 3
        try:
            response = await client.post(url, content=body, headers=headers, timeout=30, follow_redirects=False)
        except httpx.HTTPError as exc:
            if last_try:
                return f"failed: {type(exc).__name__}"
            raise ApplicationError(f"callback target unreachable: {type(exc).__name__}",
                                   type="CallbackUnreachable") from None
        finally:
            if self._http is None:
                await client.aclose()
        if response.status_code >= 500 and not last_try:
            raise ApplicationError(f"callback target answered {response.status_code}", type="CallbackServerError")
        if response.status_code >= 300:
            return f"failed: HTTP {response.status_code}"
        return f"delivered: HTTP {response.status_code}"

    def _record_callback(self, inp: FinishContainerInput, status: str) -> None:
        with self._sessions.begin() as session:
            instance = self._load(session, inp)  # type: ignore[arg-type]
            instance.callback_status = status[:100]
            self._event(session, instance, "callback", {"status": status})


def signing_key(session: Session, settings: Settings, instance: ContainerInstance) -> bytes | str:
    """The key of an execution's callback: its ``callback_secret``'s value, else the account's
    derived key; a str says why there is none (the secret is gone)."""
    spec = ContainerSpec.from_instance(instance)
    if not spec.callback_secret:
        return callback_signing_key(settings, instance.account_id)
    try:
        return resolve_secrets(session, settings, instance.account_id,
                               [spec.callback_secret])[spec.callback_secret].encode()
    except SecretResolutionError as exc:
        return f"not sent: {exc}"[:100]


def container_payload(instance: ContainerInstance) -> bytes:
    """The signed body of ``container.finished``."""
    payload = {
        "event": "container.finished", "instance_id": instance.id, "account_id": instance.account_id,
        "status": instance.status, "exit_code": instance.exit_code, "error": instance.error,
        "image": instance.image, "image_digest": instance.image_digest,
        "run_id": instance.run_id, "step_id": instance.step_id, "a2a_task_id": instance.a2a_task_id,
        "started_at": instance.started_at.isoformat() if instance.started_at else None,
        "finished_at": instance.finished_at.isoformat() if instance.finished_at else None,
        "usage": instance.usage, "violations": instance.violations,
        "artifacts": [{k: a.get(k) for k in ("name", "size_bytes", "sha256", "error") if k in a}
                      for a in instance.artifacts or []],
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def callback_signing_key(settings: Settings, account_id: int) -> bytes:
    """The default key of an account's container callbacks, derived from the settings' secret key
    (so nothing extra is stored): HMAC-SHA256(secret_key, "container-callback:<account id>")."""
    return hmac.new(settings.secret_key.encode(), f"container-callback:{account_id}".encode(),
                    hashlib.sha256).hexdigest().encode()
