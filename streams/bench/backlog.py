"""What every benchmark shares: fresh topic names, the simulated history, pre-filled backlogs,
child processes and the one way a throughput is computed from their progress samples.

Throughput rule (the same for every measured consumer): each consumer records ``(monotonic
time, records)`` after every batch it finished; the clock starts when the first ``warmup``
records are done (so group join, imports and first-call costs are excluded) and stops at the
last sample; ``tps = records after the start / (stop - start)``. ``time.monotonic`` is
CLOCK_MONOTONIC on Linux, so samples from several processes merge on one time line.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.errors import FraudstreamError
from streams.kafka import clients, topics
from streams.kafka.topics import create_topics
from streams.settings import Settings


class BenchError(FraudstreamError):
    """A measurement could not be made (a worker failed, stalled or timed out)."""


Sample = tuple[float, int]  # (time.monotonic() after a batch, records in that batch)
SPAWN = mp.get_context("spawn")  # children start clean: no inherited heap, threads or clients
TX_PER_DAY = 9_000  # the handbook's density: 5,000 cards and 10,000 terminals


@dataclass(frozen=True)
class Rate:
    tps: float
    seconds: float
    records: int  # counted after the warm-up

    def as_dict(self) -> dict[str, Any]:
        return {
            "tps": round(self.tps, 1),
            "seconds": round(self.seconds, 3),
            "records": self.records,
        }


def measured_rate(samples: Iterable[Sample], warmup: int) -> Rate:
    """Throughput after the first ``warmup`` records, from every consumer's batch samples."""
    ordered = sorted(samples)
    done = 0
    start: float | None = None
    counted = 0
    for at, n in ordered:
        if start is None:
            done += n
            if done >= warmup:
                start = at
            continue
        counted += n
    if start is None or counted == 0:
        raise BenchError(f"too few records measured ({done}) after a warm-up of {warmup}")
    seconds = ordered[-1][0] - start
    return Rate(counted / seconds, seconds, counted)


def warmup_for(n: int) -> int:
    """Records consumed before the clock starts: a tenth of the run, 500 to 20,000."""
    return min(20_000, max(500, n // 10))


def run_tag() -> str:
    return uuid.uuid4().hex[:8]


def absolute(settings: Settings) -> Settings:
    """Paths made absolute, so child processes find rules, model and policy from anywhere."""
    update: dict[str, Any] = {
        name: Path(getattr(settings, name)).resolve()
        for name in ("rules_dir", "model_dir", "policy_file")
    }
    return settings.model_copy(update=update)


def scoped(
    settings: Settings, tag: str, scope: str, *, shared_source: str | None = None
) -> Settings:
    """Settings whose topics, group and app id are unique to one measurement of one run."""
    return topics.scoped(settings, f"bench-{tag}.{scope}", source=shared_source)


def make_topics(settings: Settings, *extra: str) -> None:
    from streams.kafka.topics import topic_names

    create_topics(settings, [*topic_names(settings), *extra])


def history(transactions: int, seed: int = 7, attributes: bool = False) -> pl.DataFrame:
    """``transactions`` simulated rows (handbook reader columns, stream order, with labels;
    with the simulator's transaction attributes when ``attributes``)."""
    days = max(2, math.ceil(transactions / TX_PER_DAY) + 1)

    def draw(days: int) -> pl.DataFrame:
        frame = simulate(
            customers=5000, terminals=10000, days=days, seed=seed, attributes=attributes
        )
        return read_handbook_frame(frame)

    df = draw(days)
    while df.height < transactions:  # a sparse draw: simulate a few more days
        days += 2
        df = draw(days)
    return df.head(transactions)


def produce_values(
    settings: Settings,
    topic: str,
    keys: list[bytes],
    values: list[bytes],
    timestamps: list[int],
) -> None:
    """Pre-encoded records as fast as the broker takes them, each with a ``sent_ms`` header."""
    out = clients.CheckedProducer(settings, flush_timeout_s=120)
    send = out.send
    for key, value, ts in zip(keys, values, timestamps, strict=True):
        headers: list[tuple[str, str | bytes | None]] = [
            ("sent_ms", str(int(time.time() * 1000)).encode())
        ]
        send(topic, value, key, timestamp=ts, headers=headers)
    out.close(f"of {len(keys)} backlog records for {topic}")


def transaction_backlog(settings: Settings, df: pl.DataFrame) -> None:
    """The transactions of ``df`` (no labels) on ``settings.topic_transactions``, the way
    ``streams.data.produce`` encodes them."""
    from streams.data.produce import produce_history

    produce_history(df.drop("TX_FRAUD", strict=False), settings)


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return (math.nan, math.nan)
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def start_children(target: Callable[..., None], args_per_child: list[tuple[Any, ...]]) -> list[Any]:
    procs = [SPAWN.Process(target=target, args=args, daemon=True) for args in args_per_child]
    for proc in procs:
        proc.start()
    return procs


def stop_children(procs: list[Any], timeout_s: float = 30.0) -> None:
    """Join the started children (a failure before one started must not hide its cause)."""
    procs = [proc for proc in procs if proc.pid is not None]
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
