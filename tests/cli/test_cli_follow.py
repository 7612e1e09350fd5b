"""Following a run's log without a server: a stream that drops before ``end`` is resumed with
``Last-Event-ID`` after the last line received, nothing repeated (httpx's MockTransport plays
the API)."""

from __future__ import annotations

import httpx
import pytest

from cli import follow
from cli.client import ApiClient
from cli.config import Config
from cli.output import outcome_code


def log(chunk: int, index: int, line: str, step: str = "build") -> str:
    return (f'id: {chunk}.{index}\nevent: log\ndata: {{"step_id":"{step}","attempt":1,"seq":{chunk},'
            f'"line_no":{index + 1},"line":"{line}"}}\n\n')


def test_a_dropped_log_stream_resumes_after_the_last_line_and_exits_with_the_outcome(monkeypatch, capsys):
    monkeypatch.setattr(follow.time, "sleep", lambda seconds: None)
    cursors: list[str | None] = []
    answers = [": stream open\n\n" + log(7, 0, "one") + log(7, 1, "\\u001b[31mtwo\\u001b[0m"),
               log(8, 0, "three", step="test") + 'event: end\ndata: {"run_id":5,"status":"failure","error":"x"}\n\n']

    def handler(request: httpx.Request) -> httpx.Response:
        cursors.append(request.headers.get("Last-Event-ID"))
        return httpx.Response(200, text=answers[len(cursors) - 1], headers={"content-type": "text/event-stream"})

    api = ApiClient(Config("http://api.test", "dvo_x"), transport=httpx.MockTransport(handler))
    assert follow.follow_logs(api, 5, step=None, color=False, as_json=False) == 1  # the run failed
    assert cursors == [None, "7.1"]
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["[build#1] one", "[build#1] two", "[test#1] three"]
    assert "run 5 ended: failure: x" in captured.err


@pytest.mark.parametrize(("status", "code"), [("success", 0), ("failure", 1), ("cancelled", 3), ("weird", 4)])
def test_the_exit_code_is_the_run_outcome(status, code):
    assert outcome_code(status) == code
