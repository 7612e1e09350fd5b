"""Health: is the API up, and can it reach its database and Temporal?"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text

from adapters.temporal import TemporalGateway
from api.schemas import HealthPublic

router = APIRouter(tags=["health"])


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "unreachable" here
        return False


@router.get("/health", response_model=HealthPublic, summary="Health of the API, its database and Temporal",
            responses={503: {"model": HealthPublic, "description": "the database or Temporal is unreachable"}})
def show_health(request: Request, response: Response) -> HealthPublic:
    """Whether the API can reach its database and Temporal (200), or which it cannot (503)."""
    database = _database_ok(request)
    temporal: TemporalGateway = request.app.state.temporal
    temporal_ok = temporal.call(temporal.healthy)
    ok = database and temporal_ok
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(status="ok" if ok else "degraded", api="ok",
                        database="ok" if database else "unreachable", temporal="ok" if temporal_ok else "unreachable")
