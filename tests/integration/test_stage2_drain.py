"""Stage 2's drain loop (``streams.kafka.faust_drain``) on a real broker, when the stream's
buffer is full most of the time: records whose hand-over waits go on in a task, as in faust,
and every flagged record is decided exactly once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.bench import backlog
from streams.bench.stage2 import flagged_backlog
from streams.kafka.topics import create_topics
from streams.process import WorkerProcess
from streams.settings import Settings
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration


def test_a_full_stream_buffer_loses_and_repeats_nothing(settings: Settings, tmp_path: Path):
    s = backlog.absolute(settings).model_copy(update={"stage2_stream_buffer": 4})
    create_topics(s)
    total = flagged_backlog(s, backlog.history(3_000, seed=5))
    worker = WorkerProcess("stage2", s, tmp_path, FRAUD_LOG_LEVEL="INFO").start()
    try:
        decisions = read_topic(s, s.topic_decisions, until=total, timeout_s=240)
    finally:
        code = worker.stop(30)
    log = worker.log()
    keys = [m.key() for m in decisions]
    assert len(set(keys)) == total, log[-3000:]
    assert len(keys) == total, "a flagged record was decided twice"
    assert code in (0, -15), log[-3000:]
    counts = re.search(r"(\d+) records handed to the streams, (\d+) of them waited", log)
    assert counts, log[-3000:]
    handed, waited = int(counts[1]), int(counts[2])
    assert handed >= total
    assert waited > 0, "the buffer never filled: the waiting path was not exercised"
