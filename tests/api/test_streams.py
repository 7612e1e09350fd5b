"""The tailing logic behind the live streams: cursors, the SSE wire format, the id horizon that
keeps delivery gap-free when PostgreSQL commits out of id order, shared reads, line numbers."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import pytest
from httpx_sse._decoders import SSEDecoder
from hypothesis import given
from hypothesis import strategies as st

from api.streams import (
    CursorError,
    IdHorizon,
    LineNumbers,
    LogCursor,
    SharedReads,
    encode_event,
    encode_log_lines,
    parse_event_cursor,
    parse_log_cursor,
)
from db.models import PipelineRun, RunEvent, StepLogChunk


def decode(text: str) -> list:
    decoder, events = SSEDecoder(), []
    for line in text.split("\n")[:-1]:  # the text ends with a newline
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


def test_cursors_parse_what_the_streams_send_and_refuse_the_rest():
    assert parse_event_cursor(" 42 ") == 42
    assert parse_event_cursor("0") == 0
    assert parse_log_cursor("17.3") == LogCursor(17, 3)
    assert parse_log_cursor("17") == LogCursor(17, None)
    for bad in ["", "-1", "1.5", "abc", "²", "1e3", "9" * 19]:
        with pytest.raises(CursorError):
            parse_event_cursor(bad)
    for bad in ["", "1.", ".1", "1.2.3", "a.1", "1.-1"]:
        with pytest.raises(CursorError):
            parse_log_cursor(bad)


def test_each_log_line_is_one_sse_message_whatever_it_contains():
    content = "\n".join(["plain", 'quotes " and \\ backslash', "tab\there", "carriage\rreturn", "ünïcödé ✓", "",
                         "data: not a field", "id: 99"])
    messages = encode_log_lines(7, 'step "x"', 2, 3, content, first_line_no=11)
    events = decode("".join(messages))
    assert [e.id for e in events] == [f"7.{i}" for i in range(8)]
    assert {e.event for e in events} == {"log"}
    payloads = [json.loads(e.data) for e in events]
    assert [p["line"] for p in payloads] == content.split("\n")
    assert [p["line_no"] for p in payloads] == list(range(11, 19))
    assert payloads[0] == {"step_id": 'step "x"', "attempt": 2, "seq": 3, "line_no": 11, "line": "plain"}


def test_a_run_event_carries_its_payload_run_pipeline_and_time():
    from datetime import UTC, datetime

    row = RunEvent(id=5, run_id=3, pipeline_id=2, event_type="step_started",
                   payload={"step_id": "build", "attempt": 1, "run_id": 999},
                   created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    (event,) = decode(encode_event(row))
    assert (event.id, event.event) == ("5", "step_started")
    assert json.loads(event.data) == {"step_id": "build", "attempt": 1, "run_id": 3, "pipeline_id": 2,
                                      "created_at": "2026-01-02T03:04:05+00:00"}


# ---- the horizon ----------------------------------------------------------------------------


def horizon_at(value: int) -> IdHorizon:
    horizon = IdHorizon(sessions=None, table=RunEvent.__table__, settle_seconds=lambda: 5.0)  # type: ignore[arg-type]
    horizon.value = value
    return horizon


def test_the_horizon_stops_before_a_missing_id_until_it_appears():
    horizon = horizon_at(10)
    assert horizon.walk([11, 12, 14, 15], now=0.0, settle=5.0) is False
    assert horizon.value == 12  # 13 is missing: 14 and 15 wait
    assert horizon.walk([14, 15], now=1.0, settle=5.0) is False
    assert horizon.value == 12
    assert horizon.walk([13, 14, 15, 16], now=2.0, settle=5.0) is True  # 13 committed late
    assert horizon.value == 16


def test_a_missing_id_is_passed_once_it_has_been_missing_for_the_settle_time():
    horizon = horizon_at(0)
    horizon.walk([1, 4, 9], now=100.0, settle=5.0)  # 2-3 and 5-8 missing since 100
    assert horizon.value == 1
    horizon.walk([4, 9], now=104.9, settle=5.0)
    assert horizon.value == 1
    horizon.walk([4, 6, 9, 12], now=105.0, settle=5.0)  # 10-11 only missing since now
    assert horizon.value == 9
    horizon.walk([12], now=110.0, settle=5.0)
    assert horizon.value == 12


def test_with_no_settle_time_holes_are_passed_at_once():
    horizon = horizon_at(0)
    assert horizon.walk([3, 7, 8], now=0.0, settle=0.0) is True
    assert horizon.value == 8


@given(st.sets(st.integers(min_value=1, max_value=60)))
def test_the_horizon_is_the_end_of_the_gap_free_prefix_until_holes_settle(visible: set[int]):
    ids = sorted(visible)
    prefix = 0
    while prefix + 1 in visible:
        prefix += 1
    waiting = horizon_at(0)
    waiting.walk(ids, now=0.0, settle=5.0)
    assert waiting.value == prefix
    waiting.walk([i for i in ids if i > waiting.value], now=5.0, settle=5.0)
    assert waiting.value == (ids[-1] if ids else 0)


# ---- shared reads ---------------------------------------------------------------------------


async def test_identical_reads_at_the_same_moment_run_once():
    reads = SharedReads()
    calls = 0
    gate = threading.Event()

    def read() -> int:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return 42

    waiting = [asyncio.ensure_future(reads.get(("k", 1), read, ttl=10)) for _ in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(*waiting) == [42] * 20
    assert await reads.get(("k", 1), read, ttl=10) == 42  # still fresh
    assert calls == 1
    assert await reads.get(("k", 2), read, ttl=10) == 42
    assert calls == 2


async def test_a_failed_read_is_not_kept_and_a_cancelled_waiter_does_not_cancel_it():
    reads = SharedReads()
    outcomes = iter([RuntimeError("db down"), 7])

    def read() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with pytest.raises(RuntimeError):
        await reads.get("k", read, ttl=10)
    gate = threading.Event()

    def slow() -> int:
        gate.wait(5)
        return read()

    leaving = asyncio.ensure_future(reads.get("k", slow, ttl=10))
    staying = asyncio.ensure_future(reads.get("k", slow, ttl=10))
    await asyncio.sleep(0.05)
    leaving.cancel()
    gate.set()
    assert await staying == 7


# ---- against the database -------------------------------------------------------------------


def a_run(stack) -> tuple[int, int, int]:
    acct = stack.account()
    response = acct.client.post("/pipelines", json={"name": f"p-{uuid.uuid4().hex[:8]}",
                                                    "steps": [{"id": "a", "type": "custom", "with": {"handler": "noop"}}]})
    pipeline_id = response.json()["id"]
    run_id = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={}).json()["id"]
    return acct.id, pipeline_id, run_id


def test_the_horizon_waits_for_an_uncommitted_id_and_passes_a_rolled_back_one_after_settling(stack):
    if stack.backend == "sqlite":
        pytest.skip("SQLite serializes writers: a second writer would wait for the first")
    account_id, pipeline_id, run_id = a_run(stack)
    clock = [1000.0]
    horizon = IdHorizon(stack.sessions, RunEvent.__table__, lambda: 2.0, clock=lambda: clock[0])  # type: ignore[arg-type]

    def row(kind: str) -> RunEvent:
        return RunEvent(account_id=account_id, run_id=run_id, pipeline_id=pipeline_id, event_type=kind, payload={})

    horizon.advance()
    open_tx = stack.sessions()
    try:
        pending = row("pending")
        open_tx.add(pending)
        open_tx.flush()
        with stack.sessions.begin() as session:
            after = row("after")
            session.add(after)
        assert horizon.advance() < pending.id
        clock[0] += 1.0
        assert horizon.advance() < pending.id
        open_tx.rollback()  # the id is burned for good
    finally:
        open_tx.close()
    clock[0] += 0.5
    assert horizon.advance() < after.id  # missing for 1.5 s only
    clock[0] += 0.5
    assert horizon.advance() >= after.id


def test_line_numbers_of_a_chunk_read_in_the_middle_of_a_log_come_from_the_database(stack):
    _, _, run_id = a_run(stack)
    with stack.sessions.begin() as session:
        for seq, content in enumerate(["one\ntwo", "three", "", "five\nsix\nseven"], start=1):
            session.add(StepLogChunk(run_id=run_id, step_id="s", attempt=1, seq=seq, content=content))
    numbers = LineNumbers()
    with stack.sessions() as session:
        assert session.get(PipelineRun, run_id) is not None
        assert numbers.first_line(session, run_id, "s", 1, 1) == 1
        assert numbers.first_line(session, run_id, "s", 1, 4) == 5  # after 2 + 1 + 1 (an empty line) lines
        assert numbers.first_line(session, run_id, "s", 2, 2) == 1  # another attempt: nothing before it
        numbers.remember(run_id, "s", 1, 4, 8)
        assert numbers.first_line(session, run_id, "s", 1, 5) == 8
