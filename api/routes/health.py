"""Health: is the API up, and can it reach its database and Temporal?"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from api.schemas import HealthPublic

router = APIRouter(tags=["health"])


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "unreachable" here
        return False


@router.get("/health", response_model=HealthPublic)
async def health(request: Request, response: Response) -> HealthPublic:
    database = await run_in_threadpool(_database_ok, request)
    try:
        client = await asyncio.wait_for(request.app.state.temporal.client(), 3)
        temporal = await asyncio.wait_for(client.service_client.check_health(), 3)
    except Exception:  # noqa: BLE001
        temporal = False
    ok = database and temporal
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(status="ok" if ok else "degraded", api="ok",
                        database="ok" if database else "unreachable", temporal="ok" if temporal else "unreachable")
