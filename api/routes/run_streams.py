"""Live streams of runs (the seed's DevopsPipelineChannel and GitJobLogsChannel), as
Server-Sent Events: run events of the account, and one run's log lines. The tailing is in
:mod:`api.streams`.

Browsers' ``EventSource`` cannot set headers, so these two routes (and only these) also take
the API token as ``?access_token=``; :mod:`api.security` masks it in the request (and so in the
access log) before any route or log sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from api import errors, security
from api.deps import Caller, bearer, get_caller_with_own_session
from api.streams import CursorError, LogCursor, StreamHub, parse_event_cursor, parse_log_cursor
from services import runs as services

T = TypeVar("T")
router = APIRouter(prefix="/pipeline_runs", tags=["pipeline runs"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RESPONSES = {200: {"content": {"text/event-stream": {}}, "description": "a Server-Sent Events stream"},
                 404: {"description": "no such run or pipeline in your account"}}


def stream_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    access_token: Annotated[str | None, Query(
        description="the API token, for clients that cannot send `Authorization` (browsers' EventSource)",
    )] = None,
) -> Caller:
    """The caller, from the Authorization header or else ``?access_token=``. The declared
    parameter only documents it: :mod:`api.security` has already replaced the value with
    ``***`` in the request and set the real one aside for these routes."""
    token = security.query_access_token(request)
    if credentials is None and token is not None:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return get_caller_with_own_session(request, credentials)


StreamCaller = Annotated[Caller, Depends(stream_caller)]
LastEventIdHeader = Annotated[str | None, Header(alias="Last-Event-ID", description="the last `id:` received; wins "
                                                 "over the `last_event_id` query parameter")]


def _hub(request: Request) -> StreamHub:
    return request.app.state.streams


def _cursor_text(header: str | None, query: str | None) -> tuple[str, str] | None:
    # EventSource resends the original URL on reconnect with a newer Last-Event-ID header.
    if header is not None and header.strip():
        return "header", header
    if query is not None:
        return "query", query
    return None


def _check_owned(request: Request, account_id: int, pipeline_id: int | None, run_id: int | None) -> None:
    with request.app.state.sessions() as session:
        if pipeline_id is not None:
            services.get_pipeline(session, account_id, pipeline_id)
        if run_id is not None:
            services.get_run(session, account_id, run_id)


def _parsed_cursor(header: str | None, query: str | None, parse: Callable[[str], T]) -> T | None:
    """The resume cursor from ``Last-Event-ID`` (preferred) or ``last_event_id``; 422 naming
    whichever was malformed."""
    cursor = _cursor_text(header, query)
    if cursor is None:
        return None
    try:
        return parse(cursor[1])
    except CursorError as exc:
        where = ["header", "Last-Event-ID"] if cursor[0] == "header" else ["query", "last_event_id"]
        raise errors.unprocessable([{"loc": where, "type": "cursor", "msg": str(exc)}]) from None


@router.get("/stream", response_class=StreamingResponse, responses=SSE_RESPONSES)
async def stream_run_events(
    request: Request,
    caller: StreamCaller,
    last_event_id_header: LastEventIdHeader = None,
    pipeline_id: Annotated[int | None, Query(ge=1, description="only this pipeline's runs")] = None,
    run_id: Annotated[int | None, Query(ge=1, description="only this run")] = None,
    last_event_id: Annotated[str | None, Query(description="resume after this event id (as the header)")] = None,
    from_start: Annotated[bool, Query(description="replay the account's history first (same as last_event_id=0)")] = False,
) -> StreamingResponse:
    """Server-Sent Events of the account's runs: ``run_created``, ``run_updated``,
    ``run_completed``, ``step_started``, ``step_completed``, ``approval_requested``,
    ``approval_decided``. Each message has ``id:`` (the event id), ``event:`` (its type) and
    ``data:`` (JSON: the payload plus ``run_id``, ``pipeline_id``, ``created_at``).

    With ``Last-Event-ID`` (or ``last_event_id``) the stream continues right after that event,
    with nothing missed or repeated; otherwise it starts now, or from the beginning with
    ``from_start=true``. An idle stream sends ``: keep-alive`` comments."""
    after: int | None = _parsed_cursor(last_event_id_header, last_event_id, parse_event_cursor)
    await run_in_threadpool(_check_owned, request, caller.account_id, pipeline_id, run_id)
    hub = _hub(request)
    if after is None:
        after = 0 if from_start else await hub.latest_event_id()
    body = hub.run_events(request, caller.account_id, after=after, pipeline_id=pipeline_id, run_id=run_id)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/{run_id}/logs/stream", response_class=StreamingResponse, responses=SSE_RESPONSES)
async def stream_run_logs(
    run_id: int,
    request: Request,
    caller: StreamCaller,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: Annotated[str | None, Query(description="resume after this log line id (as the header)")] = None,
) -> StreamingResponse:
    """Server-Sent Events of the run's log, one ``event: log`` per line as it is written, from
    the start of the run's log (or right after ``Last-Event-ID``): ``id: <chunk>.<line>``,
    ``data: {step_id, attempt, seq, line_no, line}`` (``seq`` numbers the stored chunk,
    ``line_no`` the line within the step attempt's log, from 1). Once the run has finished and
    every line was sent, a last ``event: end`` carries ``{run_id, status, error}`` and the
    stream closes (an EventSource should then ``close()``, or it reconnects and gets ``end``
    again)."""
    cursor: LogCursor | None = _parsed_cursor(last_event_id_header, last_event_id, parse_log_cursor)
    await run_in_threadpool(_check_owned, request, caller.account_id, None, run_id)
    body = _hub(request).run_logs(request, caller.account_id, run_id, cursor)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)
