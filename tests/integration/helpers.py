"""Small helpers for integration tests: read a topic back, run workers."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.kafka import clients
from streams.process import WorkerProcess
from streams.settings import Settings
from streams.stage1.worker import Stage1Worker


def read_topic(
    settings: Settings, topic: str, until: int, timeout_s: float = 120.0, idle_s: float = 3.0
) -> list[Any]:
    """Every message of ``topic`` from the beginning, until ``until`` are read (then a short
    idle period to catch extras) or the timeout."""
    consumer: Consumer = clients.consumer(settings, "reader", **{"enable.auto.commit": False})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=5000, timeout=0.2)
            good = [m for m in msgs if not m.error()]
            if good:
                out += good
                last = time.monotonic()
            elif len(out) >= until and time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return out


@contextlib.contextmanager
def stage1_thread(settings: Settings) -> Iterator[Stage1Worker]:
    worker = Stage1Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop_event.set()
        thread.join(30)


@contextlib.contextmanager
def stage2_process(settings: Settings, log_dir: Path | None = None) -> Iterator[WorkerProcess]:
    """A stage-2 worker process (``streams.process``), stopped at the end; its log is printed
    when it did not exit cleanly."""
    with tempfile.TemporaryDirectory(prefix="fraudstream-stage2-") as tmp:
        worker = WorkerProcess("stage2", settings, log_dir or Path(tmp), FRAUD_LOG_LEVEL="WARNING")
        worker.start()
        try:
            yield worker
        finally:
            code = worker.stop(30)
            if code not in (0, -15):
                sys.stderr.write(worker.log()[-4000:])
