"""``WorkerProcess.wait_log``: found, given up when the caller's event is set, or timed out."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from streams.process import WorkerProcess
from streams.settings import Settings


@pytest.fixture
def worker(tmp_path: Path):
    w = WorkerProcess("stage1", Settings(), tmp_path)
    w.log_path = tmp_path / "stage1.log"
    w.log_path.write_text("12:00:00 INFO ready\n")
    w.proc = subprocess.Popen(["sleep", "30"])  # a live process at the seam, not a worker
    yield w
    w.proc.kill()
    w.proc.wait()


def test_found(worker: WorkerProcess) -> None:
    assert worker.wait_log("ready", timeout_s=1) is True


def test_the_event_ends_the_wait_without_an_error(worker: WorkerProcess) -> None:
    done = threading.Event()
    threading.Timer(0.3, done.set).start()
    assert worker.wait_log("first checkpoint written", timeout_s=30, until=done) is False


def test_time_runs_out(worker: WorkerProcess) -> None:
    with pytest.raises(RuntimeError, match="no 'never'"):
        worker.wait_log("never", timeout_s=0.3, until=threading.Event())
