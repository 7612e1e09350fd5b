"""The ``github_action`` executor: dispatch a GitHub Actions workflow (``workflow_dispatch``) and
report its run's conclusion. The wait is durable: ``start`` dispatches and returns poll state,
``IntegrationExecutionWorkflow`` sleeps on a timer and calls ``poll`` until the run completed.

Configuration: ``repository`` ("owner/name"), ``workflow`` (file name or id), ``ref`` (default
``main``), ``api_url`` (default https://api.github.com). Credential field ``token``. The
execution's inputs become the dispatch's ``inputs`` (as strings, as GitHub requires).
Poll state never holds the token: ``{owner, repo, workflow, ref, dispatched_at[, run_id]}``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed, IntegrationRetryable
from adapters.integrations.http import HttpAnswer, check_url, send

DEFAULT_API_URL = "https://api.github.com"
CLOCK_SKEW = timedelta(seconds=10)  # a run created this much before our clock's dispatch time still counts
SEARCH_WINDOW = timedelta(minutes=1)
HANDLED = frozenset({200, 201, 204, 401, 403, 404, 409, 422})
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class GithubActionExecutor:
    async def start(self, call: ExecutorCall) -> ExecutorOutcome:
        config = call.configuration
        repository = config.get("repository")
        if not isinstance(repository, str) or not _REPOSITORY.match(repository):
            raise IntegrationFailed(f"configuration.repository must be \"owner/name\", not {repository!r}")
        owner, repo = repository.split("/", 1)
        workflow = config.get("workflow")
        if isinstance(workflow, int) and not isinstance(workflow, bool):
            workflow = str(workflow)
        if not isinstance(workflow, str) or not workflow.strip():
            raise IntegrationFailed("configuration.workflow must name the workflow file (deploy.yml) or its id")
        ref = config.get("ref") or "main"
        if not isinstance(ref, str):
            raise IntegrationFailed("configuration.ref must be a branch or tag name")
        inputs = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in call.inputs.items()}
        dispatched_at = datetime.now(UTC).replace(microsecond=0)
        state = {"owner": owner, "repo": repo, "workflow": workflow, "ref": ref,
                 "dispatched_at": dispatched_at.isoformat().replace("+00:00", "Z")}
        await _request(call, "POST", f"{_workflow_path(state)}/dispatches", accept=frozenset({204}),
                       body={"ref": ref, "inputs": inputs})
        return ExecutorOutcome(poll_state=state, poll_after_seconds=call.settings.integration_poll_interval_seconds,
                               log=[f"dispatched workflow {workflow} of {repository} on {ref}"])

    async def poll(self, call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome:
        run_id = state.get("run_id")
        if run_id is None:
            run_id = await _find_run(call, state)
            if run_id is None:  # not created yet: ask again later
                return _again(call, state)
            state = {**state, "run_id": run_id}
        run = (await _request(call, "GET", f"/repos/{_q(state['owner'])}/{_q(state['repo'])}/actions/runs/"
                                           f"{int(run_id)}")).body
        if not isinstance(run, dict):
            raise IntegrationRetryable("GitHub answered a run that is not a JSON object")
        if run.get("status") != "completed":
            return _again(call, state)
        outputs = {"run_id": run.get("id", run_id), "run_number": run.get("run_number"),
                   "conclusion": run.get("conclusion"), "html_url": run.get("html_url"), "status": run.get("status")}
        if run.get("conclusion") != "success":
            raise IntegrationFailed(f"GitHub Actions run #{run.get('run_number')} concluded "
                                    f"{run.get('conclusion')}: {run.get('html_url')}")
        return ExecutorOutcome(outputs=outputs)


def _again(call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome:
    return ExecutorOutcome(poll_state=state, poll_after_seconds=call.settings.integration_poll_interval_seconds)


def _q(part: str) -> str:
    return quote(str(part), safe="")


def _workflow_path(state: dict[str, Any]) -> str:
    return f"/repos/{_q(state['owner'])}/{_q(state['repo'])}/actions/workflows/{_q(state['workflow'])}"


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def _find_run(call: ExecutorCall, state: dict[str, Any]) -> int | None:
    """The earliest workflow_dispatch run on ``ref`` created at/after the dispatch (minus skew)."""
    dispatched = _parse_time(state.get("dispatched_at"))
    if dispatched is None:
        raise IntegrationFailed("the poll state has no valid dispatched_at")
    since = (dispatched - SEARCH_WINDOW).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = await _request(call, "GET", f"{_workflow_path(state)}/runs",
                            params={"event": "workflow_dispatch", "branch": state["ref"], "created": f">={since}",
                                    "per_page": "50"})
    runs = answer.body.get("workflow_runs") if isinstance(answer.body, dict) else None
    candidates = []
    for run in runs or []:
        created = _parse_time(run.get("created_at")) if isinstance(run, dict) else None
        if created is not None and created >= dispatched - CLOCK_SKEW and isinstance(run.get("id"), int):
            candidates.append((created, run["id"]))
    return min(candidates)[1] if candidates else None


async def _request(call: ExecutorCall, method: str, path: str, *, accept: frozenset[int] | None = None,
                   body: dict[str, Any] | None = None, params: dict[str, str] | None = None) -> HttpAnswer:
    api_url = await check_url(call, call.configuration.get("api_url") or DEFAULT_API_URL, "configuration.api_url")
    token = call.credentials.get("token")
    if not token:
        raise IntegrationFailed("the credential has no token field (a GitHub token with actions:write)")
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
               "Authorization": f"Bearer {token}", "User-Agent": "devops-integrations"}
    content = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        content = json.dumps(body).encode()
    answer = await send(call, method, api_url.rstrip("/") + path, what="GitHub", headers=headers, content=content,
                        params=params, accept=HANDLED)
    if answer.status_code == 403 and answer.headers.get("x-ratelimit-remaining") == "0":
        reset = answer.headers.get("x-ratelimit-reset", "")
        wait = max(1.0, float(reset) - datetime.now(UTC).timestamp()) if reset.isdigit() else 60.0
        raise IntegrationRetryable("GitHub rate limit exceeded", retry_after=min(wait, 600.0))
    if answer.status_code >= 400:
        message = answer.body.get("message") if isinstance(answer.body, dict) else None
        raise IntegrationFailed(f"GitHub answered HTTP {answer.status_code} to {method} {path}: "
                                f"{message or 'no message'}")
    if accept is not None and answer.status_code not in accept:
        raise IntegrationFailed(f"GitHub answered HTTP {answer.status_code} to {method} {path}, expected "
                                f"{'/'.join(map(str, sorted(accept)))}")
    return answer
