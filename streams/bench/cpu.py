"""Where the machine's CPU goes during a measurement: the machine's busy share and each named
process's use, so a latency figure comes with the load it was measured under.

On a small machine the broker, the load generator, the reader and both workers share the
cores; a p99 measured with the cores saturated says more about the box than about a worker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import psutil


def _busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over all cores."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


def _process_seconds(pid: int) -> float | None:
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return t.user + t.system


class CpuMeter:
    """CPU use between ``start`` and ``stop``: ``machine_busy`` (percent of all cores), and per
    named process the percent of one core it used (``other``: the rest of the busy cores, the
    broker when it runs on this machine). A process that ended meanwhile is left out."""

    def __init__(self, pids: Mapping[str, int | None]):
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._machine = (0.0, 0.0)
        self._procs: dict[str, float | None] = {}
        self._wall = 0.0

    def start(self) -> CpuMeter:
        self._machine = _busy_seconds()
        self._procs = {name: _process_seconds(pid) for name, pid in self.pids.items()}
        self._wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        busy0, total0 = self._machine
        busy1, total1 = _busy_seconds()
        wall = max(time.monotonic() - self._wall, 1e-9)
        cores = psutil.cpu_count() or 1
        out = {"machine_busy": round(100 * (busy1 - busy0) / max(total1 - total0, 1e-9), 1)}
        named = 0.0
        for name, pid in self.pids.items():
            before, after = self._procs.get(name), _process_seconds(pid)
            if before is None or after is None:
                continue
            out[name] = round(100 * (after - before) / wall, 1)
            named += out[name]
        out["other"] = round(max(0.0, out["machine_busy"] * cores - named), 1)
        return out
