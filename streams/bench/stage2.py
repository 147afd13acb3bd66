"""Stage-2 throughput: the real faust app (``python -m streams stage2``) over a flagged backlog.

The backlog holds one flagged record per transaction of the run, made by the real stage-1
``Screener`` (``ScreenedBatch.flagged_record``), so stage 2 scores the same number of records as
every other measurement. The app runs as a child process configured through ``FRAUD_*``
variables; its throughput is read from the decisions topic: the decisions' record timestamps
(set by stage 2's producer when it sends them) after the warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.bench.backlog import BenchError, Rate, Sample, measured_rate, produce_values
from streams.data.produce import transaction_value
from streams.kafka import clients
from streams.process import WorkerProcess
from streams.rules.loader import load_rules
from streams.schema import Transaction, decode, encode
from streams.settings import Settings
from streams.stage1.screen import Screener

STALL_S = 60.0  # no new decision for this long: stage 2 is stuck


def transactions(df: pl.DataFrame) -> list[Transaction]:
    """The rows of a handbook frame as stage 1 decodes them from the transactions topic."""
    cols = zip(
        df["TRANSACTION_ID"].cast(pl.Utf8).to_list(),
        df["CUSTOMER_ID"].cast(pl.Utf8).to_list(),
        df["TERMINAL_ID"].cast(pl.Utf8).to_list(),
        df["TX_AMOUNT"].cast(pl.Float64).to_list(),
        df["ts_ms"].cast(pl.Int64).to_list(),
        strict=True,
    )
    return [decode(transaction_value(*row)) for row in cols]


def flagged_backlog(settings: Settings, df: pl.DataFrame) -> int:
    """Every transaction of ``df`` as the flagged record stage 1 would forward, on
    ``settings.topic_flagged``; returns the number of records."""
    screener = Screener.from_settings(settings, load_rules(settings.rules_dir))
    txs = transactions(df)
    keys: list[bytes] = []
    values: list[bytes] = []
    times: list[int] = []
    size = settings.stage1_batch_size
    for start in range(0, len(txs), size):
        out = screener.screen(txs[start : start + size])
        for i, tx in enumerate(out.txs):
            keys.append(tx.card_id.encode())
            values.append(encode(out.flagged_record(i)))
            times.append(tx.ts_ms)
    produce_values(settings, settings.topic_flagged, keys, values, times)
    return len(values)


def spawn_worker(
    stage: str, settings: Settings, log_dir: Path, name: str, metrics_port: int | None = None
) -> WorkerProcess:
    """A quiet worker (warnings only in its log) for a measurement."""
    port = {} if metrics_port is None else {"FRAUD_METRICS_PORT": str(metrics_port)}
    return WorkerProcess(stage, settings, log_dir, name, FRAUD_LOG_LEVEL="WARNING", **port).start()


def read_decisions(
    settings: Settings,
    expected: int,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
    stall_s: float = STALL_S,
) -> tuple[list[Sample], str | None]:
    """(record time in s, 1) of each decision on ``settings.topic_decisions`` until ``expected``
    distinct transactions are decided; with why it stopped early, if it did (the worker exited,
    made no progress for ``stall_s``, or the whole took longer than ``timeout_s``)."""
    topic = settings.topic_decisions
    consumer = clients.consumer(
        settings, f"{settings.stage2_app_id}.bench-reader", **{"enable.auto.commit": False}
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    seen: set[bytes] = set()
    samples: list[Sample] = []
    started = last = time.monotonic()
    stopped: str | None = None
    try:
        while len(seen) < expected:
            now = time.monotonic()
            if now - started > timeout_s:
                stopped = f"timed out after {timeout_s:.0f}s"
            elif seen and now - last > stall_s:
                stopped = f"no decision for {stall_s:.0f}s"
            elif alive is not None and not alive():
                stopped = "the worker exited"
            if stopped:
                break
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error():
                    continue
                key = msg.key() or b""
                if key in seen:
                    continue  # a redelivered decision: count each transaction once
                seen.add(key)
                last = time.monotonic()
                kind, stamp = msg.timestamp()
                at = stamp / 1000 if kind and stamp > 0 else time.time()
                samples.append((at, 1))
    finally:
        consumer.close()
    return samples, stopped


def measure_stage2(
    settings: Settings, df: pl.DataFrame, warmup: int, log_dir: Path
) -> dict[str, Any]:
    """Fill the flagged backlog from ``df``, run stage 2 over it, rate from its decisions."""
    total = flagged_backlog(settings, df)
    worker = spawn_worker("stage2", settings, log_dir, "bench-stage2")
    try:
        samples, stopped = read_decisions(
            settings, total, timeout_s=max(180.0, total / 200), alive=lambda: worker.alive
        )
    finally:
        worker.stop(20)
    if stopped and len(samples) <= warmup:
        raise BenchError(
            f"stage 2 decided {len(samples)} of {total} records: {stopped}; see {worker.log_path}"
        )
    rate: Rate = measured_rate(samples, warmup)
    out: dict[str, Any] = {
        **rate.as_dict(),
        "warmup": warmup,
        "flagged_backlog": total,
        "decided": len(samples),
    }
    if stopped:  # the rate is over what it decided before it stopped
        out["incomplete"] = (
            f"{stopped} after {len(samples)} of {total} decisions; see {worker.log_path}"
        )
    return out
