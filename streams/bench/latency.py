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
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.bench.backlog import SPAWN, percentiles, stop_children
from streams.bench.stage2 import spawn_worker, stop_worker
from streams.data.produce import produce_history
from streams.kafka.embedded import free_port
from streams.observability.readiness import wait_ready
from streams.settings import Settings

READY_TIMEOUT_S = 120.0


def _reader_child(settings: Settings, stop: Any, results: Any) -> None:
    """Record (topic is flagged, stage, sent_ms, arrival ms) of every output until ``stop``."""
    from streams.kafka import clients
    from streams.kafka.dlq import header

    consumer = clients.consumer(
        settings,
        f"{settings.stage1_group}.latency-reader",
        **{"enable.auto.commit": False, "fetch.wait.max.ms": 1},
    )
    topics = (settings.topic_decisions, settings.topic_flagged)
    parts = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
    consumer.assign(parts)
    flagged_topic = settings.topic_flagged
    stage1: list[tuple[int, float]] = []  # (sent_ms, latency ms)
    stage2: list[tuple[int, float]] = []
    while not stop.is_set():
        for msg in consumer.consume(num_messages=1000, timeout=0.01):
            if msg.error():
                continue
            arrived = time.time() * 1000
            stamp = header(msg, "sent_ms")
            if not stamp:
                continue
            sent = int(stamp)
            if msg.topic() == flagged_topic:
                stage1.append((sent, arrived - sent))
            elif orjson.loads(msg.value() or b"{}").get("stage") == 2:
                stage2.append((sent, arrived - sent))
            else:
                stage1.append((sent, arrived - sent))
    consumer.close()
    results.put((stage1, stage2))


def measure_latency(
    settings: Settings, df: pl.DataFrame, offered_tps: float, warmup: int, log_dir: Path
) -> dict[str, Any]:
    """Send ``df`` at ``offered_tps`` through both stages; latency percentiles in ms."""
    ports = {"stage1": free_port(), "stage2": free_port()}
    procs = [
        spawn_worker(stage, settings, log_dir / f"bench-latency-{stage}.log", port)
        for stage, port in ports.items()
    ]
    stop, results = SPAWN.Event(), SPAWN.Queue()
    reader = SPAWN.Process(target=_reader_child, args=(settings, stop, results), daemon=True)
    try:
        wait_ready(ports, procs, READY_TIMEOUT_S)
        reader.start()
        sent = 0
        warm_end_ms = [float("inf")]

        def progress(n: int) -> None:
            nonlocal sent
            sent += n
            if sent >= warmup and warm_end_ms[0] == float("inf"):
                warm_end_ms[0] = time.time() * 1000

        started = time.monotonic()
        stats = produce_history(df, settings, rate=offered_tps, progress=progress)
        elapsed = time.monotonic() - started
        time.sleep(3.0)  # the last outputs drain
        stop.set()
        stage1, stage2 = results.get(timeout=60)
    finally:
        stop.set()
        stop_children([reader])
        for proc in procs:
            stop_worker(proc)
    measured1 = [lat for at, lat in stage1 if at >= warm_end_ms[0]]
    measured2 = [lat for at, lat in stage2 if at >= warm_end_ms[0]]
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
    }
