"""Issue 11 item 6: with the database unreachable every route answers 503 with ``Retry-After``
and says so, instead of a plain 500 (``/health`` already said 503)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.database_errors import MESSAGE
from tests.harness import ApiServer, make_settings


@pytest.fixture(params=["postgresql", "sqlite"])
def unreachable_api(request, temporal_env, tmp_path: Path):
    if request.param == "postgresql":
        url = "postgresql+psycopg://root@127.0.0.1:1/x"  # nothing listens on port 1: connection refused
    else:
        url = f"sqlite:///{tmp_path / 'no-such-directory' / 'devops.db'}"  # cannot be opened
    target = temporal_env.client.service_client.config.target_host
    settings = make_settings(url, tmp_path / "data", target, schedule_reconcile_on_start=False)
    server = ApiServer(settings)
    yield server
    server.stop()


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/v1/devops/pipelines/1/trigger", {}),
    ("GET", "/api/v1/devops/pipelines", None),
    ("GET", "/api/v1/devops/pipeline_runs/1", None),
    ("POST", "/api/v1/devops/pipeline_runs/1/cancel", None),
])
def test_routes_answer_503_with_retry_after_while_the_database_is_unreachable(unreachable_api, method, path, body):
    # authentication reads the token from the database first: it must end in 503 too
    response = httpx.request(method, f"{unreachable_api.url}{path}", json=body, timeout=30,
                             headers={"Authorization": "Bearer some-token"})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"detail": MESSAGE}
    assert "127.0.0.1" not in response.text and "psycopg" not in response.text  # the driver's text stays in the log


def test_health_still_says_which_part_is_down(unreachable_api):
    response = httpx.get(f"{unreachable_api.url}/health", timeout=30)
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_errors_that_are_not_unavailability_keep_their_answer(stack):
    """A working database: unknown ids still 404, a bad token 401 (no 503 by mistake)."""
    acct = stack.account()
    assert acct.client.get("/pipeline_runs/99999999").status_code == 404
    bad = httpx.get(f"{stack.url}/api/v1/devops/pipelines", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401
