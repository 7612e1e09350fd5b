"""What a container used and how it ended: ``container.stats`` samples, the engine's timestamps,
and an out-of-memory kill the engine reports late."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import docker.errors

STATS_SECONDS = 2.0


class UsageTracker:
    """Peaks and totals from ``container.stats`` samples (cgroup v1 and v2 shapes)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {"cpu_seconds": 0.0, "memory_peak_bytes": 0, "network_rx_bytes": 0,
                                         "network_tx_bytes": 0, "block_read_bytes": 0, "block_write_bytes": 0,
                                         "pids_peak": 0}
        self.samples = 0

    def _peak(self, key: str, value: float | None) -> None:
        if value:
            self.values[key] = max(self.values[key], value)

    def sample(self, stats: dict[str, Any]) -> None:
        if not stats:
            return
        self.samples += 1
        memory = stats.get("memory_stats") or {}
        self._peak("memory_peak_bytes", max(memory.get("max_usage") or 0, memory.get("usage") or 0))
        cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        self._peak("cpu_seconds", round(cpu / 1e9, 3) if cpu else None)
        networks = stats.get("networks") or {}
        self._peak("network_rx_bytes", sum(n.get("rx_bytes", 0) for n in networks.values()))
        self._peak("network_tx_bytes", sum(n.get("tx_bytes", 0) for n in networks.values()))
        blkio = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        self._peak("block_read_bytes", sum(e.get("value", 0) for e in blkio if str(e.get("op")).lower() == "read"))
        self._peak("block_write_bytes", sum(e.get("value", 0) for e in blkio if str(e.get("op")).lower() == "write"))
        self._peak("pids_peak", (stats.get("pids_stats") or {}).get("current"))

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {**self.values, "samples": self.samples, **extra}


def parse_docker_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def oom_reported_late(container: Any, started: datetime | None) -> bool:
    """A SIGKILLed container (exit 137) whose engine has not flagged OOMKilled yet: the engine
    handles the task's exit and containerd's OOM event separately, and on a loaded machine the
    exit can come first. Look again for a moment, and at the engine's ``oom`` event."""
    for _ in range(4):
        time.sleep(0.5)
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        if container.attrs.get("State", {}).get("OOMKilled"):
            return True
    since = int(started.timestamp()) - 1 if started else int(time.time()) - 3600
    try:
        events = container.client.events(since=since, until=int(time.time()) + 1, decode=True,
                                         filters={"container": container.id, "event": "oom"})
        return any(True for _ in events)
    except docker.errors.APIError:
        return False
