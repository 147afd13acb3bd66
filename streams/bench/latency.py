"""Latency at a steady offered rate, through both real workers.

``python -m streams stage1`` and ``python -m streams stage2`` run as child processes on fresh
topics and are polled on ``/readyz`` until they hold their partitions. The history (with its
labels, as ``fraudstream produce`` publishes it) is then sent at ``offered_tps`` by
``streams.data.produce``, which stamps each transaction with a ``sent_ms`` header. A reader in its
own process consumes the flagged and decisions topics and records, for every output, its arrival
time minus ``sent_ms``: the time from the producer's send to the moment a consumer can read it.

- stage 1: every stage-1 outcome: the approval on the decisions topic, or the forward on the
  flagged topic;
- end to end: the stage-2 decisions (the flagged transactions).

Outputs of the first ``warmup`` transactions sent are left out.

``measure_broker_floor`` sends the same traffic through a plain confluent-kafka passthrough (each
record forwarded as it is read, no decoding) and measures it the same way: what the broker and
the clients alone cost at that rate, the part of the stage-1 latency no worker code can remove.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.bench.backlog import SPAWN, percentiles, stop_children
from streams.bench.cpu import CpuMeter
from streams.bench.stage2 import spawn_worker
from streams.data.produce import produce_history
from streams.kafka.embedded import free_port
from streams.observability.readiness import wait_ready
from streams.settings import Settings

READY_TIMEOUT_S = 120.0
# The measuring consumers' fetch wait. The embedded broker holds a fetch for its whole wait even
# when records arrive, so this is part of every measured latency; at 1 ms, though, the reader and
# the passthrough sent ~1,000 fetches/s each and the broker spent its CPU answering them (floor
# p99 7.6 s at 1 ms, 0.15 s at 5-10 ms, 30 s at 5,000 tx/s).
READER_FETCH_WAIT_MS = 5
DRAIN_IDLE_S = 10.0  # after the sending, the reader stops once nothing came for this long
READER_RESULT_TIMEOUT_S = 300.0
READY_FETCH_S = 1.0  # the reader's first fetch, before the sending starts


def _reader_child(
    settings: Settings,
    stop: Any,
    results: Any,
    expected: Any,
    ready: Any,
    topics: tuple[str, ...] | None = None,
) -> None:
    """Record (sent_ms, latency) of every output: stage-1 outcomes and stage-2 decisions of
    ``settings``' topics, or every record of ``topics`` as stage 1. ``ready`` is set once its
    first fetch has answered: the sending waits for it, or the reader's own start (seconds for a
    fresh process) would be counted as the workers' latency (it was, until 2026-12-06: the
    first seconds' outputs read 3-5 s late and made the p99). Once ``stop`` is set (the
    sending is over and ``expected.value`` holds the transactions sent), it goes on until every
    transaction has its stage-1 output and every forwarded one its stage-2 decision, or nothing
    came for ``DRAIN_IDLE_S``: stopping at the end of the sending would leave out the slowest
    outputs, and the percentiles would flatter the workers."""
    from streams.kafka import clients
    from streams.kafka.dlq import header

    consumer = clients.consumer(
        settings,
        f"{settings.stage1_group}.latency-reader",
        **{"enable.auto.commit": False, "fetch.wait.max.ms": READER_FETCH_WAIT_MS},
    )
    topics = topics or (settings.topic_decisions, settings.topic_flagged)
    parts = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
    consumer.assign(parts)
    first = consumer.consume(num_messages=1000, timeout=READY_FETCH_S)  # empty: nothing sent yet
    ready.set()
    flagged_topic = settings.topic_flagged
    stage1: list[tuple[int, float]] = []  # (sent_ms, latency ms)
    stage2: list[tuple[int, float]] = []
    forwarded = 0
    last = time.monotonic()
    while True:
        if stop.is_set():
            done = len(stage1) >= expected.value and len(stage2) >= forwarded
            if done or time.monotonic() - last > DRAIN_IDLE_S:
                break
        for msg in first or clients.consume_ready(consumer, 1000, 0.01):
            last = time.monotonic()
            if msg.error():
                continue
            arrived = time.time() * 1000
            stamp = header(msg, "sent_ms")
            if not stamp:
                continue
            sent = int(stamp)
            if msg.topic() == flagged_topic:
                stage1.append((sent, arrived - sent))
                forwarded += 1
            elif orjson.loads(msg.value() or b"{}").get("stage") == 2:
                stage2.append((sent, arrived - sent))
            else:
                stage1.append((sent, arrived - sent))
        first = []
    consumer.close()
    results.put((stage1, stage2))


def _passthrough_child(settings: Settings, forward: str, stop: Any, ready: Any) -> None:
    """Forward every transaction record, as read, to ``forward`` (headers kept)."""
    from streams.kafka import clients

    consumer = clients.consumer(
        settings,
        f"{settings.stage1_group}.floor",
        **{"enable.auto.commit": False, "fetch.wait.max.ms": READER_FETCH_WAIT_MS},
    )
    topic = settings.topic_transactions
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    producer = clients.producer(settings)
    ready.set()
    while not stop.is_set():
        for msg in clients.consume_ready(consumer, 1000, 0.01):
            if msg.error() is None:
                producer.produce(forward, msg.value(), msg.key(), headers=msg.headers())
        producer.poll(0)
    producer.flush(10)
    consumer.close()


def _send(
    settings: Settings, df: pl.DataFrame, offered_tps: float, warmup: int
) -> tuple[float, float, Any]:
    """Send ``df`` at ``offered_tps``; (wall ms when the warm-up ended, seconds, stats)."""
    sent = 0
    warm_end_ms = float("inf")

    def progress(n: int) -> None:
        nonlocal sent, warm_end_ms
        sent += n
        if sent >= warmup and warm_end_ms == float("inf"):
            warm_end_ms = time.time() * 1000

    started = time.monotonic()
    stats = produce_history(df, settings, rate=offered_tps, progress=progress)
    elapsed = time.monotonic() - started
    return warm_end_ms, elapsed, stats


def measure_latency(
    settings: Settings, df: pl.DataFrame, offered_tps: float, warmup: int, log_dir: Path
) -> dict[str, Any]:
    """Send ``df`` at ``offered_tps`` through both stages; latency percentiles in ms."""
    ports = {"stage1": free_port(), "stage2": free_port()}
    procs = [
        spawn_worker(stage, settings, log_dir, f"bench-latency-{stage}", port)
        for stage, port in ports.items()
    ]
    stop, results, expected = SPAWN.Event(), SPAWN.Queue(), SPAWN.Value("q", 0)
    reader_ready = SPAWN.Event()
    reader = SPAWN.Process(
        target=_reader_child, args=(settings, stop, results, expected, reader_ready), daemon=True
    )
    try:
        wait_ready(ports, procs, READY_TIMEOUT_S)
        reader.start()
        if not reader_ready.wait(READY_TIMEOUT_S):
            raise TimeoutError("the latency reader did not start")
        pids = {stage: proc.pid for stage, proc in zip(ports, procs, strict=True)}
        meter = CpuMeter({**pids, "sender": os.getpid(), "reader": reader.pid}).start()
        warm_end_ms, elapsed, stats = _send(settings, df, offered_tps, warmup)
        cpu = meter.stop()
        expected.value = stats.transactions
        stop.set()
        stage1, stage2 = results.get(timeout=READER_RESULT_TIMEOUT_S)
    finally:
        stop.set()
        stop_children([reader])
        for proc in procs:
            proc.stop(20)
    measured1 = [lat for at, lat in stage1 if at >= warm_end_ms]
    measured2 = [lat for at, lat in stage2 if at >= warm_end_ms]
    p50_1, p99_1 = percentiles(measured1)
    p50_2, p99_2 = percentiles(measured2)
    return {
        "offered_tps": offered_tps,
        "achieved_send_tps": round(stats.transactions / elapsed, 1),
        "transactions": stats.transactions,
        "labels": stats.labels,
        "warmup": warmup,
        "stage1_outputs": len(measured1),
        "stage2_decisions": len(measured2),
        "stage1_p50": round(p50_1, 2),
        "stage1_p99": round(p99_1, 2),
        "end_to_end_p50": round(p50_2, 2),
        "end_to_end_p99": round(p99_2, 2),
        "cpu_percent": cpu,
    }


def measure_broker_floor(
    settings: Settings, forward: str, df: pl.DataFrame, offered_tps: float, warmup: int
) -> dict[str, Any]:
    """The same traffic (transactions and labels) through a plain passthrough instead of the
    workers; latency percentiles in ms."""
    stop, halt, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    ready, reader_ready = SPAWN.Event(), SPAWN.Event()
    expected = SPAWN.Value("q", 0)
    passthrough = (settings, forward, halt, ready)  # forwards until the reader has read all
    reader = (settings, stop, results, expected, reader_ready, (forward,))
    children = [
        SPAWN.Process(target=_passthrough_child, args=passthrough, daemon=True),
        SPAWN.Process(target=_reader_child, args=reader, daemon=True),
    ]
    try:
        for child in children:
            child.start()
        if not ready.wait(READY_TIMEOUT_S) or not reader_ready.wait(READY_TIMEOUT_S):
            raise TimeoutError("the passthrough or its reader did not start")
        names = ("passthrough", "reader")
        pids = {name: child.pid for name, child in zip(names, children, strict=True)}
        meter = CpuMeter({**pids, "sender": os.getpid()}).start()
        warm_end_ms, _, stats = _send(settings, df, offered_tps, warmup)
        cpu = meter.stop()
        expected.value = stats.transactions
        stop.set()
        floor, _ = results.get(timeout=READER_RESULT_TIMEOUT_S)
    finally:
        stop.set()
        halt.set()
        stop_children(children)
    p50, p99 = percentiles([lat for at, lat in floor if at >= warm_end_ms])
    return {
        "broker_floor_p50": round(p50, 2),
        "broker_floor_p99": round(p99, 2),
        "broker_floor_cpu_percent": cpu,
    }
