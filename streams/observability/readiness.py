"""Waiting for worker processes to report ready on their ``/readyz`` endpoints."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from streams.errors import FraudstreamError

if TYPE_CHECKING:
    from streams.process import WorkerProcess


def wait_ready(ports: dict[str, int], procs: list[WorkerProcess], timeout_s: float) -> None:
    """Poll each worker's /readyz (``stage -> port``) until it has joined its group and holds its
    partitions; FraudstreamError if a process exits or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    pending = dict(ports)
    while pending:
        for proc in procs:
            if proc.poll() is not None:
                raise FraudstreamError(proc.exit_line())
        for stage, port in list(pending.items()):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        del pending[stage]
            except (OSError, urllib.error.URLError):
                pass
        if time.monotonic() > deadline:
            raise FraudstreamError(f"workers not ready after {timeout_s:.0f}s: {sorted(pending)}")
        time.sleep(0.2)
