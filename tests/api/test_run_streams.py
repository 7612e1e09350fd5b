"""Live streams over real HTTP with a real SSE client (httpx + httpx_sse), on both databases:
run events (order, filters, account isolation, resume with Last-Event-ID) and step logs (every
line in order, resume mid-chunk, the final status)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from db.models import RunEvent
from tests.harness import Stack, wait_for, wait_run

API = "/api/v1/devops"


def sh(step_id: str, command: str) -> dict[str, Any]:
    return {"id": step_id, "type": "run_tests", "with": {"command": command}}


def create_pipeline(acct, steps: list[dict[str, Any]]) -> int:
    response = acct.client.post("/pipelines", json={"name": f"p-{uuid.uuid4().hex[:8]}", "steps": steps})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def trigger(acct, pipeline_id: int) -> dict[str, Any]:
    response = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={})
    assert response.status_code == 201, response.text
    return response.json()


class Reader:
    """Follows one SSE stream on a thread until ``until(event)`` holds, then disconnects."""

    def __init__(self, stack: Stack, token: str | None, path: str, *, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None,
                 until: Callable[[ServerSentEvent], bool] = lambda event: False) -> None:
        self.url = f"{stack.url}{API}{path}"
        self.params = params or {}
        self.headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        self.until = until
        self.events: list[ServerSentEvent] = []
        self.status_code: int | None = None
        self.error: BaseException | None = None
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Reader:
        self.thread.start()
        assert self.connected.wait(30), "the stream did not answer"
        return self

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client, \
                    connect_sse(client, "GET", self.url, params=self.params, headers=self.headers) as source:
                self.status_code = source.response.status_code
                self.connected.set()
                if self.status_code != 200:
                    source.response.read()
                    return
                for event in source.iter_sse():
                    self.events.append(event)
                    if self.until(event):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc
        finally:
            self.connected.set()

    def result(self, timeout: float = 60) -> list[ServerSentEvent]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the stream did not reach its end; got {len(self.events)} events"
        if self.error is not None:
            raise self.error
        return self.events


def read(stack: Stack, token: str, path: str, until: Callable[[ServerSentEvent], bool], **kwargs: Any) -> list[ServerSentEvent]:
    return Reader(stack, token, path, until=until, **kwargs).start().result()


def is_event(kind: str, run_id: int | None = None) -> Callable[[ServerSentEvent], bool]:
    return lambda e: e.event == kind and (run_id is None or json.loads(e.data)["run_id"] == run_id)


def is_end(event: ServerSentEvent) -> bool:
    return event.event == "end"


def summary(events: list[ServerSentEvent]) -> list[tuple[str, str | None]]:
    return [(e.event, json.loads(e.data).get("step_id")) for e in events]


def log_lines(events: list[ServerSentEvent]) -> list[tuple[str, str, int, int, int, str]]:
    out = []
    for e in events:
        if e.event == "log":
            d = json.loads(e.data)
            out.append((e.id, d["step_id"], d["attempt"], d["seq"], d["line_no"], d["line"]))
    return out


def hub(stack: Stack):
    return stack.api.server.config.app.state.streams


RUN_SEQUENCE = [("run_created", None), ("run_updated", None), ("step_started", "build"),
                ("step_completed", "build"), ("step_started", "test"), ("step_completed", "test"),
                ("run_completed", None)]


# ---- run events ----------------------------------------------------------------------------


def test_run_events_arrive_live_in_order_starting_from_now(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [sh("build", "echo build"), sh("test", "echo test")])
    earlier = wait_run(acct.client, trigger(acct, pid)["id"])
    reader = Reader(stack, acct.token, "/pipeline_runs/stream", params={"pipeline_id": pid},
                    until=is_event("run_completed")).start()
    assert reader.status_code == 200
    run = trigger(acct, pid)
    events = reader.result()
    assert summary(events) == RUN_SEQUENCE  # nothing of the earlier run: no history without a cursor
    data = [json.loads(e.data) for e in events]
    assert {d["run_id"] for d in data} == {run["id"]} != {earlier["id"]}
    assert all(d["pipeline_id"] == pid and d["created_at"] for d in data)
    assert data[-1]["status"] == "success"
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids))


def test_event_stream_filters_by_pipeline_and_by_run(stack):
    acct = stack.account()
    first = create_pipeline(acct, [sh("build", "true"), sh("test", "true")])
    second = create_pipeline(acct, [sh("other", "true")])
    runs = [trigger(acct, first), trigger(acct, second), trigger(acct, first)]
    for run in runs:
        wait_run(acct.client, run["id"])
    everything = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed", runs[2]["id"]),
                      params={"from_start": "true"})
    assert {json.loads(e.data)["run_id"] for e in everything} == {r["id"] for r in runs}

    only_second = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed"),
                       params={"pipeline_id": second, "last_event_id": "0"})
    assert {json.loads(e.data)["pipeline_id"] for e in only_second} == {second}
    assert [e.event for e in only_second] == ["run_created", "run_updated", "step_started", "step_completed",
                                              "run_completed"]
    only_run = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed"),
                    params={"run_id": runs[2]["id"], "from_start": "true"})
    assert summary(only_run) == RUN_SEQUENCE
    assert {json.loads(e.data)["run_id"] for e in only_run} == {runs[2]["id"]}


def test_another_account_never_sees_the_events_and_gets_404_for_its_runs(stack):
    a, b = stack.account(), stack.account()
    a_pipeline = create_pipeline(a, [sh("build", "echo secret-of-a")])
    a_run = wait_run(a.client, trigger(a, a_pipeline)["id"])
    b_pipeline = create_pipeline(b, [sh("build", "true")])
    b_run = wait_run(b.client, trigger(b, b_pipeline)["id"])
    # B's whole history, from the very first event of the table: only B's own run
    seen = read(stack, b.token, "/pipeline_runs/stream", is_event("run_completed", b_run["id"]),
                params={"from_start": "true"})
    assert {json.loads(e.data)["run_id"] for e in seen} == {b_run["id"]}
    with httpx.Client(base_url=f"{stack.url}{API}", headers={"Authorization": f"Bearer {b.token}"}) as client:
        for path, params in [(f"/pipeline_runs/{a_run['id']}/logs/stream", {}),
                             ("/pipeline_runs/stream", {"run_id": a_run["id"]}),
                             ("/pipeline_runs/stream", {"pipeline_id": a_pipeline}),
                             ("/pipeline_runs/999999999/logs/stream", {})]:
            response = client.get(path, params=params)
            assert response.status_code == 404, (path, response.text)
            assert "secret-of-a" not in response.text


def test_resuming_with_last_event_id_yields_exactly_the_missed_events(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [sh(f"s{i}", "sleep 0.3") for i in range(4)])
    first = Reader(stack, acct.token, "/pipeline_runs/stream", params={"pipeline_id": pid},
                   until=lambda e: e.event == "step_started").start()
    run = trigger(acct, pid)
    before = first.result()  # disconnected after the first step started; the run goes on
    time.sleep(0.5)
    after = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed"),
                 params={"pipeline_id": pid}, headers={"Last-Event-ID": before[-1].id})
    full = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed"),
                params={"run_id": run["id"], "from_start": "true"})
    assert [e.id for e in before + after] == [e.id for e in full]
    assert len(full) == 2 + 2 * 4 + 1
    # the query parameter does the same, and the header wins over it
    middle = full[4].id
    by_query = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed"),
                    params={"run_id": run["id"], "last_event_id": middle})
    assert [e.id for e in by_query] == [e.id for e in full[5:]]
    header_wins = read(stack, acct.token, "/pipeline_runs/stream", is_event("run_completed"),
                       params={"run_id": run["id"], "last_event_id": "0"}, headers={"Last-Event-ID": middle})
    assert [e.id for e in header_wins] == [e.id for e in full[5:]]


def test_a_cursor_that_is_not_ours_is_422_naming_the_field(stack):
    acct = stack.account()
    assert acct.client.get("/pipeline_runs/stream", headers={"Last-Event-ID": "abc"}).json()["detail"][0]["loc"] == [
        "header", "Last-Event-ID"]
    assert acct.client.get("/pipeline_runs/stream", params={"last_event_id": "-1"}).json()["detail"][0]["loc"] == [
        "query", "last_event_id"]
    pid = create_pipeline(acct, [sh("a", "true")])
    run = trigger(acct, pid)
    response = acct.client.get(f"/pipeline_runs/{run['id']}/logs/stream", headers={"Last-Event-ID": "12.x"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


def test_access_token_query_parameter_authenticates_and_stays_out_of_the_access_log(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [sh("a", "true")])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    handler, level = Capture(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        events = read(stack, None, f"/pipeline_runs/{run['id']}/logs/stream", is_end,
                      params={"access_token": acct.token})
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert events[-1].event == "end" and json.loads(events[-1].data)["status"] == "success"
    assert any(f"/pipeline_runs/{run['id']}/logs/stream" in line for line in records), records
    assert not any(acct.token in line for line in records), records
    assert any("access_token=***" in line for line in records), records  # masked by api.security
    with httpx.Client(base_url=f"{stack.url}{API}") as anonymous:
        assert anonymous.get("/pipeline_runs/stream").status_code == 401
        assert anonymous.get("/pipeline_runs/stream", params={"access_token": "dvo_wrong"}).status_code == 401
        # only the stream routes take the token from the query string
        assert anonymous.get("/pipeline_runs", params={"access_token": acct.token}).status_code == 401


def test_an_idle_stream_sends_keep_alive_comments_and_stops_when_the_client_goes(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [sh("a", "true")])
    saved = stack.settings.stream_keepalive_seconds
    stack.settings.stream_keepalive_seconds = 0.3
    try:
        with httpx.Client(timeout=httpx.Timeout(10, read=10)) as client, client.stream(
            "GET", f"{stack.url}{API}/pipeline_runs/stream", params={"pipeline_id": pid},
            headers={"Authorization": f"Bearer {acct.token}"},
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            lines = response.iter_lines()  # kept: closing it (by garbage collection) would disconnect
            for line in lines:
                if line == ": keep-alive":
                    break
            assert hub(stack).open_streams[acct.id] == 1
    finally:
        stack.settings.stream_keepalive_seconds = saved
    wait_for(lambda: hub(stack).open_streams[acct.id] == 0, timeout=10, message="the stream to stop")


# ---- step logs -----------------------------------------------------------------------------


def test_log_stream_sends_every_line_in_order_then_the_final_status(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [sh("many", 'for i in $(seq 1 5000); do echo "line $i"; done'),
                                 sh("fail", "echo last words; exit 3")])
    run = trigger(acct, pid)
    events = read(stack, acct.token, f"/pipeline_runs/{run['id']}/logs/stream", is_end)
    assert events[-1].event == "end"
    assert json.loads(events[-1].data) == {"run_id": run["id"], "status": "failure",
                                           "error": "step 'fail' failed: command exited with code 3"}
    lines = log_lines(events)
    many = [line for line in lines if line[1] == "many"]
    assert [line[5] for line in many] == [f"line {i}" for i in range(1, 5001)]
    assert [line[4] for line in many] == list(range(1, 5001))
    assert [line[5] for line in lines if line[1] == "fail"] == ["last words", "[devops] command exited with code 3"]
    cursors = [tuple(int(part) for part in line[0].split(".")) for line in lines]
    assert cursors == sorted(set(cursors))  # unique and totally ordered
    seqs = [line[3] for line in many]
    assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[-1] > 1


def test_log_stream_resumes_after_a_disconnect_mid_log_while_the_step_runs(stack):
    acct = stack.account()
    command = 'for i in $(seq 1 3000); do echo "l $i"; if [ $((i % 300)) = 0 ]; then sleep 0.2; fi; done'
    pid = create_pipeline(acct, [sh("slow", command)])
    run = trigger(acct, pid)
    path = f"/pipeline_runs/{run['id']}/logs/stream"
    count = 0

    def stop(event: ServerSentEvent) -> bool:
        nonlocal count
        count += event.event == "log"
        return count >= 1000 and event.id.endswith(".50")

    before = read(stack, acct.token, path, stop)
    after = read(stack, acct.token, path, is_end, headers={"Last-Event-ID": before[-1].id})
    assert [line[5] for line in log_lines(before + after)] == [f"l {i}" for i in range(1, 3001)]
    assert after[-1].event == "end" and json.loads(after[-1].data)["status"] == "success"


def test_log_stream_resumes_exactly_after_any_line_even_inside_a_chunk(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [sh("a", 'seq 1 700'), sh("b", "seq 701 1000")])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    path = f"/pipeline_runs/{run['id']}/logs/stream"
    full = log_lines(read(stack, acct.token, path, is_end))
    assert [line[5] for line in full] == [str(i) for i in range(1, 1001)]
    chunk_of = [line[0].split(".")[0] for line in full]
    inside = [i for i in range(len(full) - 1) if chunk_of[i] == chunk_of[i + 1] and full[i][0].split(".")[1] != "0"]
    boundary = [i for i in range(len(full) - 1) if chunk_of[i] != chunk_of[i + 1]]
    assert inside
    for index in {inside[0], inside[len(inside) // 2], inside[-1], *boundary[:2]}:
        rest = read(stack, acct.token, path, is_end, headers={"Last-Event-ID": full[index][0]})
        assert log_lines(rest) == full[index + 1:], f"resuming after {full[index][0]}"
        assert rest[-1].event == "end"
    assert [(line[1], line[4]) for line in full[699:702]] == [("a", 700), ("b", 1), ("b", 2)]
    assert read(stack, acct.token, path, is_end, headers={"Last-Event-ID": full[-1][0]})[-1].event == "end"


def test_log_stream_of_a_finished_run_without_logs_ends_at_once(stack):
    acct = stack.account()
    pid = create_pipeline(acct, [{"id": "quiet", "type": "custom", "with": {"handler": "noop"}}])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    events = read(stack, acct.token, f"/pipeline_runs/{run['id']}/logs/stream", is_end)
    assert [e.event for e in events] == ["end"]
    assert json.loads(events[0].data)["status"] == "success"


def test_a_row_committed_out_of_id_order_is_held_back_and_then_delivered_in_order(stack):
    if stack.backend == "sqlite":
        pytest.skip("SQLite serializes writers: its ids become visible in id order")
    acct = stack.account()
    pid = create_pipeline(acct, [sh("a", "true")])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    reader = Reader(stack, acct.token, "/pipeline_runs/stream", params={"run_id": run["id"]},
                    until=lambda e: e.event == "test_second").start()

    def row(kind: str) -> RunEvent:
        return RunEvent(account_id=acct.id, run_id=run["id"], pipeline_id=pid, event_type=kind, payload={})

    slow = stack.sessions()
    try:
        early = row("test_first")
        slow.add(early)
        slow.flush()  # the smaller id is taken, its transaction not committed yet
        with stack.sessions.begin() as fast:
            late = row("test_second")
            fast.add(late)
        assert late.id > early.id
        time.sleep(1.5)  # several polls: the committed larger id must wait for the smaller one
        assert reader.events == []
        slow.commit()
    finally:
        slow.close()
    events = reader.result()
    assert [(e.event, int(e.id)) for e in events] == [("test_first", early.id), ("test_second", late.id)]
