"""A running container's output: followed line by line from a thread, masked, capped for the
instance row and forwarded to the step's log (resuming where an earlier try stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.containers.contract import HEARTBEAT_SECONDS, docker_error
from activities.steps import StepLogWriter
from domain.masking import Masker

LOG_CAP_BYTES = 102_400
LOG_TRUNCATED_MARKER = "\n[log truncated at 100 KB]\n"
LOG_SAVE_SECONDS = 1.0

_PIDS_PATTERN = re.compile(r"can't fork|cannot fork|fork: retry|Resource temporarily unavailable", re.IGNORECASE)


class CappedLog:
    """The instance's stored log: the first 100 KB (102400 bytes), then the marker."""

    def __init__(self, cap: int = LOG_CAP_BYTES) -> None:
        self._cap = cap
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False
        self.changed = False

    def add(self, text: str) -> None:
        if self.truncated:
            return
        data = text.encode()
        if self._size + len(data) > self._cap:
            room = self._cap - self._size
            self._parts.append(data[:room].decode(errors="ignore"))
            self._parts.append(LOG_TRUNCATED_MARKER)
            self._size = self._cap
            self.truncated = True
        else:
            self._parts.append(text)
            self._size += len(data)
        self.changed = True

    def text(self) -> str:
        return "".join(self._parts)


class LogFollower:
    """Follows a container's log from its start in a thread, line by line: masked lines into the
    capped instance log and (past ``skip`` lines, already forwarded by an earlier try) into the
    step log. A stream that ends while the container still runs (an idle read timeout) is
    reopened and the lines already seen are skipped."""

    def __init__(self, container: Any, masker: Masker, step_log: StepLogWriter | None, skip: int) -> None:
        self._container = container
        self._masker = masker
        self._step_log = step_log
        self._skip = skip
        self.log = CappedLog()
        self.lines = 0  # lines of the container's log handled so far
        self.forwarded = skip  # lines written to the step log (heartbeat details, for a retry)
        self.fork_failures = 0
        self._stream: Any = None
        self._closed = False

    def close(self) -> None:
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            self._stream = self._container.logs(stream=True, follow=True, stdout=True, stderr=True)
            for chunk in self._stream:
                put(chunk)
        except Exception as exc:  # noqa: BLE001 - handed to the async side, which decides
            put(exc)
        finally:
            put(None)

    def _line(self, raw: bytes) -> None:
        self.lines += 1
        text = self._masker.mask(raw.decode(errors="replace"))
        if _PIDS_PATTERN.search(text):
            self.fork_failures += 1
        self.log.add(text + "\n")
        if self._step_log is not None and self.lines > self._skip:
            self._step_log.line(text)

    async def run(self, save: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        last_beat = last_save = 0.0
        failures = 0
        while not self._closed:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            index = 0  # lines of this stream; a reopened stream starts again at the first line
            partial = b""
            error: BaseException | None = None
            pump = asyncio.create_task(asyncio.to_thread(self._pump, loop, queue))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_SECONDS / 2)
                except TimeoutError:
                    item = b""
                if item is None:
                    break
                if isinstance(item, BaseException):
                    error = item
                    continue
                partial += item
                *complete, partial = partial.split(b"\n")
                for raw in complete:
                    index += 1
                    if index > self.lines:
                        self._line(raw.rstrip(b"\r"))
                now = time.monotonic()
                if now - last_save >= LOG_SAVE_SECONDS:
                    await self._flush_step_log()
                    await asyncio.to_thread(save)
                    last_save = now
                if now - last_beat >= HEARTBEAT_SECONDS:
                    activity.heartbeat(self.forwarded)
                    last_beat = now
            await pump
            if self._closed:
                break
            if error is not None:
                # A read timeout on a quiet container or a daemon hiccup: read again from the
                # start (an exited container's log ends the stream at once), skipping seen lines.
                failures += 1
                if failures >= 5:
                    raise docker_error("follow the container's log", error)  # type: ignore[arg-type]
                continue
            await asyncio.to_thread(self._container.reload)
            if self._container.attrs.get("State", {}).get("Running"):
                continue
            if partial:
                self._line(partial.rstrip(b"\r"))
            break
        await self._flush_step_log()
        activity.heartbeat(self.forwarded)

    async def _flush_step_log(self) -> None:
        if self._step_log is None:
            return
        lines = self.lines
        await self._step_log.aflush()
        self.forwarded = max(self.forwarded, lines)
