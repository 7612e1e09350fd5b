"""Live streams: run events and step log lines tailed from the database, as Server-Sent Events.

Rows first, stream second. ``run_events`` and ``step_log_chunks`` are durable and append-only,
and their ids only increase, so a stream is a cursor over one of them: a client that reconnects
with the last id it received (``Last-Event-ID``) continues right after it, and an API restart
loses nothing.

Polling. An open stream looks for new rows every ``stream_poll_interval_seconds`` with an indexed
``id > cursor`` query, run in a worker thread (never on the event loop), each read in its own
short session (none is held between polls). Polls are aligned on the clock and identical reads
made at the same moment run once and are shared (:class:`SharedReads`): 50 clients following one
run cost one query per poll, and each log chunk is SSE-encoded once, not once per client.

Commits out of id order. On PostgreSQL an id is taken from a sequence when the row is INSERTed,
but transactions commit in any order, so a tailer reading ``id > last seen`` can pass a row that
becomes visible a moment later with a smaller id. Streams therefore never read past the table's
*horizon* (:class:`IdHorizon`): the highest id below which every id is either visible or has been
missing for ``stream_gap_settle_seconds``. A missing id under a visible one is a transaction
still committing (our writers hold one for milliseconds) or an id burned for good by a rollback
or an ``ON CONFLICT DO NOTHING``; rows above it wait until it appears or is old enough to be
called burned. Delivery stays strictly in id order, so one number is a complete cursor. SQLite
serializes writers, so ids become visible in order there: a hole is a deleted row and is passed
at once (settle 0); the code is otherwise the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from db.models import PipelineRun, RunEvent, StepLogChunk
from domain.step_types import FINISHED_RUN_STATUSES
from settings import Settings

log = logging.getLogger(__name__)

# Sent first so clients and proxies see the stream open at once (a comment: no event, no id).
OPENED = b": stream open\n\n"
KEEPALIVE = b": keep-alive\n\n"
EVENT_PAGE = 500  # run events per read
LOG_PAGE = 50  # log chunks (up to 200 lines each) per read
HORIZON_BATCH = 5000
HORIZON_TAIL = 1000  # on first use, ids older than the newest 1000 are taken as settled
_CURSOR_NUMBER = re.compile(r"[0-9]{1,18}")

T = TypeVar("T")


# ---- cursors and the wire format -------------------------------------------------------------


class CursorError(ValueError):
    """A ``Last-Event-ID`` that is not one this API sent."""


def parse_event_cursor(value: str) -> int:
    """A run event id; 0 means "before the first event"."""
    text = value.strip()
    if not _CURSOR_NUMBER.fullmatch(text):
        raise CursorError("must be a run event id as sent in `id:` (a whole number; 0 replays from the start)")
    return int(text)


@dataclass(frozen=True)
class LogCursor:
    """``<chunk id>.<line index>``: the last log line received. Without the line index the whole
    chunk counts as received."""

    chunk_id: int
    line: int | None = None


def parse_log_cursor(value: str) -> LogCursor:
    chunk, dot, line = value.strip().partition(".")
    if not _CURSOR_NUMBER.fullmatch(chunk) or (dot and not _CURSOR_NUMBER.fullmatch(line)):
        raise CursorError("must be a log line id `<chunk>.<line>` as sent in `id:`")
    return LogCursor(int(chunk), int(line) if dot else None)


def sse_message(event: str, data: str, event_id: str | None = None) -> str:
    """One SSE message; ``data`` must be a single line (compact JSON is)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {' '.join(event.split())}\ndata: {data}\n\n"


def encode_event(row: Any) -> str:
    """A run event: ``id`` its row id, ``event`` its type, ``data`` its payload plus where and when."""
    data = dict(row.payload or {})
    data.update(run_id=row.run_id, pipeline_id=row.pipeline_id,
                created_at=row.created_at.isoformat() if row.created_at else None)
    return sse_message(row.event_type, json.dumps(data, separators=(",", ":"), default=str), str(row.id))


def encode_log_lines(chunk_id: int, step_id: str, attempt: int, seq: int, content: str, first_line_no: int) -> list[str]:
    """One SSE message per line of a chunk, ``id: <chunk id>.<line index>``. Built by hand:
    this runs for every line of every log, so it avoids a dict and ``json.dumps`` per line."""
    head = f'{{"step_id":{encode_basestring_ascii(step_id)},"attempt":{attempt},"seq":{seq},"line_no":'
    return [
        f'id: {chunk_id}.{index}\nevent: log\ndata: {head}{first_line_no + index},"line":{encode_basestring_ascii(line)}}}\n\n'
        for index, line in enumerate(content.split("\n"))
    ]


# ---- the horizon ----------------------------------------------------------------------------


class IdHorizon:
    """The highest id of a table below which no new row can appear: every lower id is visible
    or has been missing for the settle time. ``advance`` runs in a worker thread (calls are
    serialized); ``walk`` is its pure part."""

    def __init__(self, sessions: sessionmaker[Session], table: Table, settle_seconds: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._id = table.c.id
        self._settle = settle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self.value: int | None = None
        # ids seen missing under a visible one: (first, last, when first seen), sorted, above value
        self._holes: list[tuple[int, int, float]] = []

    def advance(self) -> int:
        with self._lock, self._sessions() as session:
            if self.value is None:
                tail = list(session.scalars(select(self._id).order_by(self._id.desc()).limit(HORIZON_TAIL)))
                self.value = tail[-1] - 1 if len(tail) == HORIZON_TAIL else 0
            while True:
                ids = list(session.scalars(
                    select(self._id).where(self._id > self.value).order_by(self._id).limit(HORIZON_BATCH)
                ))
                if not self.walk(ids, self._clock(), self._settle()) or len(ids) < HORIZON_BATCH:
                    return self.value

    def walk(self, ids: Sequence[int], now: float, settle: float) -> bool:
        """Move over ``ids`` (the visible ids above the horizon, ascending), stopping before
        the first hole not yet settled; holes further up start their settle time now too.
        True when the horizon passed every id."""
        if self.value is None:
            self.value = 0
        blocked = False
        previous = self.value
        for id_ in ids:
            if id_ > previous + 1 and not self._hole_settled(previous + 1, id_ - 1, now, settle):
                blocked = True
            if not blocked:
                self.value = id_
            previous = id_
        self._holes = [hole for hole in self._holes if hole[1] > self.value]
        return not blocked

    def _hole_settled(self, first: int, last: int, now: float, settle: float) -> bool:
        """Record ids ``first..last`` as missing (since now, for those not seen missing before)
        and say whether all of them have been missing for ``settle`` seconds."""
        settled = True
        added: list[tuple[int, int, float]] = []
        cursor = first
        for start, end, since in self._holes:
            if end < cursor:
                continue
            if start > last:
                break
            if start > cursor:
                added.append((cursor, start - 1, now))
            settled = settled and now - since >= settle
            cursor = end + 1
            if cursor > last:
                break
        if cursor <= last:
            added.append((cursor, last, now))
        if added:
            settled = settled and settle <= 0
            self._holes = sorted([*self._holes, *added])
        return settled


# ---- shared reads ---------------------------------------------------------------------------


class SharedReads:
    """Identical reads asked for at about the same time run once, in a worker thread: later
    callers await the same result, which stays reusable for ``ttl`` seconds. A failed read is
    not kept. Callers that go away (a client disconnecting) do not cancel the read for others."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, key: Hashable, read: Callable[[], T], ttl: float) -> T:
        loop = asyncio.get_running_loop()
        now = loop.time()
        entry = self._entries.get(key)
        if entry is None or (entry[1].done() and entry[0] <= now):
            if len(self._entries) >= 512:
                self._entries = {k: e for k, e in self._entries.items() if not e[1].done() or e[0] > now}
            task = loop.create_task(asyncio.to_thread(read))
            entry = (math.inf, task)
            self._entries[key] = entry
            task.add_done_callback(partial(self._finished, key, ttl))
        return await asyncio.shield(entry[1])

    def _finished(self, key: Hashable, ttl: float, task: asyncio.Future[Any]) -> None:
        current = self._entries.get(key)
        if current is None or current[1] is not task:
            return
        if task.cancelled() or task.exception() is not None:
            del self._entries[key]
        else:
            self._entries[key] = (task.get_loop().time() + ttl, task)


class LineNumbers:
    """The first line number of each log chunk within its step attempt's log. A chunk is
    numbered from its predecessor (remembered when that one was read); only a stream resuming
    in the middle of a log asks the database, once."""

    def __init__(self, size: int = 100_000) -> None:
        self._next: OrderedDict[tuple[int, str, int, int], int] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def first_line(self, session: Session, run_id: int, step_id: str, attempt: int, seq: int) -> int:
        if seq <= 1:
            return 1
        with self._lock:
            known = self._next.get((run_id, step_id, attempt, seq - 1))
        if known is not None:
            return known
        content = StepLogChunk.content
        chunks, newlines = session.execute(
            select(func.count(), func.coalesce(func.sum(func.length(content) - func.length(func.replace(content, "\n", ""))), 0))
            .where(StepLogChunk.run_id == run_id, StepLogChunk.step_id == step_id,
                   StepLogChunk.attempt == attempt, StepLogChunk.seq < seq)
        ).one()
        return 1 + int(chunks) + int(newlines)  # a chunk of n newlines holds n + 1 lines

    def remember(self, run_id: int, step_id: str, attempt: int, seq: int, next_line: int) -> None:
        key = (run_id, step_id, attempt, seq)
        with self._lock:
            self._next[key] = next_line
            self._next.move_to_end(key)
            if len(self._next) > self._size:
                self._next.popitem(last=False)


@dataclass(frozen=True)
class RunState:
    status: str
    error: str | None
    last_chunk_id: int  # 0 when the run has no log; only read once the run has finished

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES


@dataclass(frozen=True)
class Page:
    data: bytes
    count: int
    next_after: int  # the cursor to read from next: the last row when the page was full, else the horizon


# ---- the hub --------------------------------------------------------------------------------


class StreamHub:
    """The app's live streams (one per process, made in the lifespan): the horizons of the two
    tables, the shared reads, and the generators that routes return as response bodies."""

    def __init__(self, settings: Settings, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions
        ordered_commits = engine.dialect.name == "sqlite"

        def settle() -> float:
            return 0.0 if ordered_commits else settings.stream_gap_settle_seconds

        self._event_horizon = IdHorizon(sessions, RunEvent.__table__, settle)  # type: ignore[arg-type]
        self._log_horizon = IdHorizon(sessions, StepLogChunk.__table__, settle)  # type: ignore[arg-type]
        self._reads = SharedReads()
        self._line_numbers = LineNumbers()
        self.open_streams: Counter[int] = Counter()  # by account

    @property
    def _interval(self) -> float:
        return self._settings.stream_poll_interval_seconds

    @property
    def _page_ttl(self) -> float:
        # A page of (after, horizon] never changes, so slow readers of the same tick may reuse it.
        return max(1.0, 4 * self._interval)

    async def _horizon(self, horizon: IdHorizon) -> int:
        return await self._reads.get(("horizon", id(horizon)), horizon.advance, self._interval / 2)

    async def _next_tick(self) -> None:
        """Sleep to the next multiple of the poll interval, so that streams poll together."""
        interval = self._interval
        await asyncio.sleep(interval - asyncio.get_running_loop().time() % interval)

    async def latest_event_id(self) -> int:
        """Where a stream asked for "from now" starts: after the newest event written so far."""
        def read() -> int:
            with self._sessions() as session:
                return session.scalar(select(func.max(RunEvent.id))) or 0

        return await asyncio.to_thread(read)

    # ---- run events --------------------------------------------------------------------------

    def _read_events(self, account_id: int, pipeline_id: int | None, run_id: int | None,
                     after: int, upto: int) -> Page:
        query = select(RunEvent.id, RunEvent.run_id, RunEvent.pipeline_id, RunEvent.event_type, RunEvent.payload,
                       RunEvent.created_at).where(RunEvent.account_id == account_id, RunEvent.id > after,
                                                  RunEvent.id <= upto)
        if pipeline_id is not None:
            query = query.where(RunEvent.pipeline_id == pipeline_id)
        if run_id is not None:
            query = query.where(RunEvent.run_id == run_id)
        with self._sessions() as session:
            rows = session.execute(query.order_by(RunEvent.id).limit(EVENT_PAGE)).all()
        data = "".join(encode_event(row) for row in rows).encode()
        return Page(data, len(rows), rows[-1].id if len(rows) == EVENT_PAGE else upto)

    async def run_events(self, request: Request, account_id: int, *, after: int,
                         pipeline_id: int | None = None, run_id: int | None = None) -> AsyncIterator[bytes]:
        """The account's run events with an id above ``after``, in id order, until the client goes."""
        self.open_streams[account_id] += 1
        loop = asyncio.get_running_loop()
        try:
            yield OPENED
            last_sent = loop.time()
            while True:
                try:
                    upto = await self._horizon(self._event_horizon)
                    while after < upto:
                        page = await self._reads.get(
                            ("events", account_id, pipeline_id, run_id, after, upto),
                            partial(self._read_events, account_id, pipeline_id, run_id, after, upto), self._page_ttl,
                        )
                        after = page.next_after
                        if page.count:
                            yield page.data
                            last_sent = loop.time()
                except SQLAlchemyError as exc:
                    log.warning("run event stream: reading the database failed (%s); retrying", type(exc).__name__)
                if await request.is_disconnected():
                    return
                if loop.time() - last_sent >= self._settings.stream_keepalive_seconds:
                    yield KEEPALIVE
                    last_sent = loop.time()
                await self._next_tick()
        finally:
            self.open_streams[account_id] -= 1

    # ---- step logs ---------------------------------------------------------------------------

    def _encode_chunk(self, session: Session, row: Any) -> list[str]:
        first = self._line_numbers.first_line(session, row.run_id, row.step_id, row.attempt, row.seq)
        lines = encode_log_lines(row.id, row.step_id, row.attempt, row.seq, row.content, first)
        self._line_numbers.remember(row.run_id, row.step_id, row.attempt, row.seq, first + len(lines))
        return lines

    def _chunk_columns(self) -> Any:
        return select(StepLogChunk.id, StepLogChunk.run_id, StepLogChunk.step_id, StepLogChunk.attempt,
                      StepLogChunk.seq, StepLogChunk.content)

    def _read_logs(self, run_id: int, after: int, upto: int) -> Page:
        query = (self._chunk_columns()
                 .where(StepLogChunk.run_id == run_id, StepLogChunk.id > after, StepLogChunk.id <= upto)
                 .order_by(StepLogChunk.id).limit(LOG_PAGE))
        with self._sessions() as session:
            rows = session.execute(query).all()
            parts = [line for row in rows for line in self._encode_chunk(session, row)]
        return Page("".join(parts).encode(), len(parts), rows[-1].id if len(rows) == LOG_PAGE else upto)

    def _read_rest_of_chunk(self, run_id: int, chunk_id: int, line: int) -> bytes:
        with self._sessions() as session:
            row = session.execute(
                self._chunk_columns().where(StepLogChunk.id == chunk_id, StepLogChunk.run_id == run_id)
            ).first()
            if row is None:
                return b""
            return "".join(self._encode_chunk(session, row)[line + 1:]).encode()

    def _read_run_state(self, run_id: int) -> RunState | None:
        with self._sessions() as session:
            row = session.execute(select(PipelineRun.status, PipelineRun.error).where(PipelineRun.id == run_id)).first()
            if row is None:
                return None
            last = 0
            if row.status in FINISHED_RUN_STATUSES:
                # Read after the status: every chunk is written before the run finishes, so
                # this is the run's last chunk for good.
                last = session.scalar(select(func.max(StepLogChunk.id)).where(StepLogChunk.run_id == run_id)) or 0
        return RunState(row.status, row.error, last)

    async def run_logs(self, request: Request, account_id: int, run_id: int,
                       cursor: LogCursor | None = None) -> AsyncIterator[bytes]:
        """The run's log lines after ``cursor`` (from the start without one), as they are
        written; then, once the run has finished and every line was sent, ``event: end``."""
        self.open_streams[account_id] += 1
        loop = asyncio.get_running_loop()
        try:
            yield OPENED
            after = 0
            if cursor is not None:
                after = cursor.chunk_id
                if cursor.line is not None:
                    rest = await asyncio.to_thread(self._read_rest_of_chunk, run_id, cursor.chunk_id, cursor.line)
                    if rest:
                        yield rest
            last_sent = loop.time()
            while True:
                try:
                    # The run's state first: if it has finished, its last chunk id is final.
                    state = await self._reads.get(("run", run_id), partial(self._read_run_state, run_id),
                                                  self._interval / 2)
                    if state is None:  # deleted meanwhile
                        return
                    upto = await self._horizon(self._log_horizon)
                    while after < upto:
                        page = await self._reads.get(("logs", run_id, after, upto),
                                                     partial(self._read_logs, run_id, after, upto), self._page_ttl)
                        after = page.next_after
                        if page.count:
                            yield page.data
                            last_sent = loop.time()
                    if state.finished and after >= state.last_chunk_id:
                        end = json.dumps({"run_id": run_id, "status": state.status, "error": state.error},
                                         separators=(",", ":"))
                        yield sse_message("end", end).encode()
                        return
                except SQLAlchemyError as exc:
                    log.warning("log stream of run %s: reading the database failed (%s); retrying", run_id,
                                type(exc).__name__)
                if await request.is_disconnected():
                    return
                if loop.time() - last_sent >= self._settings.stream_keepalive_seconds:
                    yield KEEPALIVE
                    last_sent = loop.time()
                await self._next_tick()
        finally:
            self.open_streams[account_id] -= 1
