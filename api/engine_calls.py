"""One engine call from a route, for Docker hosts and Swarm clusters alike.

The row's engine is opened by :func:`services.engines.open_target` (404 for another account's row,
422 on ``endpoint`` when the allowlist no longer allows it, scoped by label on a shared engine),
with a short timeout; ``call(client)`` runs against it; its outcome is recorded (a
``DockerActivity`` or a ``SwarmEvent``, by the caller's ``record``); and an engine failure answers
a clear 4xx or 502, never 500. Blocking: the routes are plain ``def`` (a worker thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from adapters.docker_engine import EngineProblem, docker_client
from services import engines
from services.engines import EngineKind
from settings import Settings

_STATUS_OF = {"not_found": status.HTTP_404_NOT_FOUND, "conflict": status.HTTP_409_CONFLICT,
              "forbidden": status.HTTP_403_FORBIDDEN, "bad_request": status.HTTP_400_BAD_REQUEST,
              "build_failed": 422, "unreachable": status.HTTP_502_BAD_GATEWAY,
              "engine_error": status.HTTP_502_BAD_GATEWAY, "registry_error": status.HTTP_502_BAD_GATEWAY}


def http_error(problem: EngineProblem) -> HTTPException:
    """An engine problem as its HTTP answer, ``detail`` the engine's own words (a failed build is a
    422 with a string, unlike validation problems: hence HTTP here, not a domain error)."""
    return HTTPException(_STATUS_OF.get(problem.kind, status.HTTP_502_BAD_GATEWAY), problem.message)


def engine_call(session: Session, kind: EngineKind, account_id: int, settings: Settings, row_id: int,
                call: Callable[[Any], Any], record: Callable[[EngineProblem | None], None] | None = None,
                timeout: float | None = None) -> Any:
    """``call(client)`` against the row's engine (``client.devops_target`` says its account scope);
    ``record(problem or None)`` after it when given; failures classified by ``kind`` and mapped."""
    target = engines.open_target(session, kind, account_id, settings, row_id)
    try:
        with (docker_client(target) if timeout is None else docker_client(target, timeout=timeout)) as client:
            client.devops_target = target
            result = call(client)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = kind.classify(exc, target.endpoint)
        if problem is None:
            raise
        if record is not None:
            record(problem)
        raise http_error(problem) from None
    if record is not None:
        record(None)
    return result
