"""Incoming provider webhooks: ``POST /api/v1/devops/webhooks/{provider}/{repository_id}``.

The seed's ``AccountGitWebhookConfig`` → ``Pipeline#matches_trigger?`` → ``trigger_run!`` flow,
split so the provider gets its answer fast and the rest is durable:

1. Here, synchronously: find the repository, verify the signature over the raw body in constant
   time with the repository's own secret (anything unverified is 401 and leaves no trace but the
   repository's rejected-delivery counter), normalise the payload, and store the delivery as a
   ``GitWebhookEvent``. The unique (repository, delivery id) pair makes a redelivery, also a
   concurrent one, a no-op: it answers 200 ``duplicate`` and starts nothing.
2. Then ``WebhookDispatchWorkflow`` (``webhook-event-<id>``) matches the linked pipelines and
   starts their runs, with Temporal's retries if the database or Temporal hiccup; the route
   answers 202 as soon as that workflow is accepted.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.common import WorkflowIDConflictPolicy

from api import safe_parse
from api.deps import SessionDep, SettingsDep, TemporalDep
from db.crypto import SecretBox
from db.models import GitProvider, GitRepository, GitWebhookEvent
from domain.errors import NotFound
from domain.webhooks import events as webhook_events
from domain.webhooks import signatures
from settings import Settings
from workflows.webhook_dispatch import WebhookDispatchInput, WebhookDispatchWorkflow, dispatch_workflow_id

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

#: Providers cap deliveries at 25 MB (GitHub); more is not a webhook.
MAX_BODY_BYTES = 25 * 1024 * 1024
#: A 25 MB push payload holds far fewer values than this; more is a bomb, not a delivery.
MAX_PAYLOAD_NODES = 2_000_000
UNVERIFIED = "the delivery could not be verified"
# Never stored: what proves a delivery, and anything a proxy might add that authenticates.
_SECRET_HEADERS = frozenset({"x-hub-signature", "x-hub-signature-256", "x-gitea-signature", "x-gogs-signature",
                             "x-gitlab-token", "authorization", "cookie", "proxy-authorization"})


def _unverified() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, UNVERIFIED)


def _stored_headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS}


def _repository_and_secret(session: Session, settings: Settings, provider: str,
                           repository_id: int) -> tuple[GitRepository, str] | None:
    row = session.execute(
        select(GitRepository, GitProvider.provider_type)
        .join(GitProvider, GitProvider.id == GitRepository.provider_id)
        .where(GitRepository.id == repository_id)
    ).first()
    if row is None:
        return None
    repository, provider_type = row
    if provider_type != provider or repository.removed_at is not None or not repository.encrypted_webhook_secret:
        return None
    secret = SecretBox(settings.secret_key, settings.old_secret_keys).decrypt(repository.encrypted_webhook_secret)
    return repository, secret


@router.post(
    "/{provider}/{repository_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"description": "a redelivery or an event we do not act on (ping)"},
               400: {"description": "the body is not JSON"},
               401: {"description": "signature missing or wrong"},
               413: {"description": "the delivery is larger than 25 MB"},
               422: {"description": "a payload the provider's event cannot have"}},
    # up to 25 MB, parsed (bounded) below only once the signature is checked
    openapi_extra={safe_parse.OWN_BODY_LIMIT: MAX_BODY_BYTES},
)
def receive_webhook(provider: str, repository_id: int, request: Request, session: SessionDep,
                    settings: SettingsDep, temporal: TemporalDep) -> Any:
    """Verify, store and dispatch one delivery from a git provider."""
    if provider not in signatures.PROVIDERS:
        raise NotFound(f"unknown provider '{provider}'; expected one of: {', '.join(signatures.PROVIDERS)}")
    raw = from_thread.run(request.body)
    found = _repository_and_secret(session, settings, provider, repository_id)
    if found is None:
        raise _unverified()
    repository, secret = found
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "the delivery is larger than 25 MB")
    try:
        signatures.verify(provider, request.headers, raw, secret)
    except signatures.SignatureError:
        session.execute(update(GitRepository).where(GitRepository.id == repository.id).values(
            webhook_rejected_count=GitRepository.webhook_rejected_count + 1, updated_at=GitRepository.updated_at))
        session.commit()
        raise _unverified() from None

    event_name = signatures.event_name(provider, request.headers)
    # A provider that sends no delivery id (old GitLab) redelivers the same bytes: use their hash.
    delivery = signatures.delivery_id(provider, request.headers) or f"sha256:{hashlib.sha256(raw).hexdigest()}"
    try:
        # bounded: a refused payload (too deep, NUL, 64-bit overflow) answers 413/422, never a 500
        payload = safe_parse.loads_json(raw, max_bytes=MAX_BODY_BYTES, max_nodes=MAX_PAYLOAD_NODES)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the body is not JSON: {exc}") from None
    try:
        normalized = webhook_events.normalize_all(provider, event_name, payload)
    except webhook_events.PayloadError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.reason) from None

    event = GitWebhookEvent(
        account_id=repository.account_id, repository_id=repository.id, provider=provider,
        delivery_id=delivery[:200], event_name=event_name, status="received" if normalized else "ignored",
        headers=_stored_headers(request), payload=payload, events=[e.as_context() for e in normalized],
    )
    session.add(event)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        existing = session.scalar(select(GitWebhookEvent.id).where(GitWebhookEvent.repository_id == repository.id,
                                                                   GitWebhookEvent.delivery_id == delivery[:200]))
        return JSONResponse({"status": "duplicate", "event_id": existing, "delivery_id": delivery},
                            status_code=status.HTTP_200_OK)
    if not normalized:
        event.status = "ignored"
        session.commit()
        return JSONResponse({"status": "ignored", "event_id": event.id, "delivery_id": delivery,
                             "reason": f"{provider} event '{event_name}' starts no pipeline"},
                            status_code=status.HTTP_200_OK)
    event.workflow_id = dispatch_workflow_id(event.id)
    session.commit()
    try:
        temporal.call(temporal.start, WebhookDispatchWorkflow.run,
                      WebhookDispatchInput(event_id=event.id, account_id=repository.account_id),
                      id=event.workflow_id, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                      static_summary=f"webhook delivery {event.id}")
    except Exception:
        # Not stored after all, so the provider's retry of this delivery is not a "duplicate".
        session.execute(delete(GitWebhookEvent).where(GitWebhookEvent.id == event.id))
        session.commit()
        return Response("the delivery could not be queued (Temporal is unavailable); retry it",
                        status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return {"status": "accepted", "event_id": event.id, "delivery_id": delivery,
            "events": [{"kind": e.kind, "action": e.action, "ref": e.ref} for e in normalized],
            "workflow_id": event.workflow_id}

