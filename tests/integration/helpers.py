"""Small helpers for integration tests: read a topic back, run workers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.kafka import clients
from streams.settings import Settings
from streams.stage1.worker import Stage1Worker
from tests.support import settings_env


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
def stage2_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "stage2"],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode not in (0, -15):
            sys.stderr.write(out.decode(errors="replace")[-4000:])
