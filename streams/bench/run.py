"""``fraudstream bench``: every measurement of the performance issue in one run.

Order: one simulated history of ``transactions`` + warm-up rows → a transactions backlog on fresh
topics → the confluent-kafka passthrough and one stage-1 worker in turns, ``repeats`` runs each
(median run reported), then stage 1 with 2 workers (same backlog, own groups and outputs) →
stage 1 with checkpoints off and every second, in turns → with the shipped rules and the
attribute rule set (over a backlog simulated with attributes) → the faust passthrough and stage
2 (over a flagged backlog of the same size) in turns, ``repeats`` runs each → latency at a
steady offered rate through both workers → memory per card.
Every measured consumer runs in its own process.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from streams.bench import backlog, peers
from streams.bench.backlog import Rate
from streams.bench.latency import measure_broker_floor, measure_latency
from streams.bench.memory import measure_memory
from streams.bench.report import machine, ratios, targets, versions
from streams.bench.restore import measure_restore
from streams.bench.rules import measure_rules_cost
from streams.bench.stage1 import measure_stage1
from streams.bench.stage2 import measure_stage2
from streams.kafka.clients import broker_for
from streams.settings import Settings

DEFAULT_TRANSACTIONS = 200_000
DEFAULT_OFFERED_TPS = 5_000.0
DEFAULT_MEMORY_CARDS = 1_000_000


@dataclass(frozen=True)
class BenchOptions:
    transactions: int = DEFAULT_TRANSACTIONS
    offered_tps: float = DEFAULT_OFFERED_TPS
    latency_seconds: float = 30.0  # steady traffic measured (after a 3-second warm-up)
    memory_cards: int = DEFAULT_MEMORY_CARDS
    workers: tuple[int, ...] = (1, 2)
    restore_days: int = 183  # the handbook's history; 0: no restore measurement
    restore_multiples: tuple[int, ...] = (1, 2, 4)
    seed: int = 7
    log_dir: Path = field(default_factory=lambda: Path("out/bench"))
    # runs of the confluent-kafka passthrough and of one stage-1 worker; each reports its median
    # run (one run of either moved by a quarter between runs of the same code on this machine)
    repeats: int = 5


Say = Callable[[str], None]
T = TypeVar("T")
U = TypeVar("U")


def _tps(rate: Rate) -> float:
    return rate.tps


def _median(runs: list[T], tps: Callable[[T], float]) -> T:
    """The median run by throughput (the upper middle one of an even count)."""
    return sorted(runs, key=tps)[len(runs) // 2]


@dataclass
class _Run:
    """What every step of one bench run shares: the broker's settings, the run's topic tag, the
    options, the backlog's size and the step timings."""

    s: Settings
    tag: str
    options: BenchOptions
    total: int
    warmup: int
    say: Say
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Announce a step and record how long it took."""
        self.say(what)
        started = time.monotonic()
        yield
        self.timings[what] = round(time.monotonic() - started, 1)

    def repeated(
        self, what: str, measure: Callable[[int], T], tps: Callable[[T], float]
    ) -> tuple[T, list[T]]:
        """``options.repeats`` runs of a measurement (``measure(i)`` for run ``i``): the median
        run by throughput and all of them."""
        runs = []
        for i in range(max(1, self.options.repeats)):
            with self.step(f"{what}, run {i + 1}"):
                runs.append(measure(i))
        return _median(runs, tps), runs

    def alternating(
        self,
        first: tuple[str, Callable[[int], T]],
        second: tuple[str, Callable[[int], U]],
    ) -> tuple[list[T], list[U]]:
        """``options.repeats`` runs of two measurements taken in turns (``first``'s run ``i``,
        then ``second``'s), so that a slow or fast spell of the machine falls on both: a worker
        and the peer its ratio divides by."""
        a: list[T] = []
        b: list[U] = []
        for i in range(max(1, self.options.repeats)):
            with self.step(f"{first[0]}, run {i + 1}"):
                a.append(first[1](i))
            with self.step(f"{second[0]}, run {i + 1}"):
                b.append(second[1](i))
        return a, b


def _peer_dict(rate: Rate, runs: list[Rate]) -> dict[str, Any]:
    return {**rate.as_dict(), "runs_tps": [round(r.tps, 1) for r in runs]}


def _confluent_and_stage1(run: _Run, source: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The confluent-kafka passthrough and stage 1 (``options.workers``' smallest count) over
    the shared backlog, ``options.repeats`` runs each in turns, the median run of each reported
    (``runs_tps``: all of them); then stage 1 with each other count of worker processes, once.
    The passthrough is the denominator of stage 1's ratio: taken minutes apart, one slow spell
    of the machine moved the ratio by a tenth."""
    options = run.options
    repeats = max(1, options.repeats)
    forward = [f"bench-{run.tag}.confluent-{i}.forward" for i in range(repeats)]
    backlog.make_topics(source, *forward)

    def confluent_run(i: int) -> Rate:
        # each run in its own consumer group: from the backlog's start
        group = source.model_copy(update={"stage1_group": f"{source.stage1_group}-{i}"})
        return peers.confluent_passthrough(group, forward[i], run.total, run.warmup)

    def stage1_run(workers: int, i: int) -> dict[str, Any]:
        scoped = backlog.scoped(
            run.s, run.tag, f"stage1-{workers}w-{i}", shared_source=source.topic_transactions
        )
        backlog.make_topics(scoped)
        return measure_stage1(scoped, run.total, run.warmup, workers)

    least = min(options.workers)
    confluent_runs, stage1_runs = run.alternating(
        ("confluent-kafka passthrough", confluent_run),
        (f"stage 1, {least} worker process(es)", lambda i: stage1_run(least, i)),
    )
    median = _median(stage1_runs, lambda r: float(r["tps"]))
    scale: dict[str, Any] = {str(least): {**median, "runs_tps": [r["tps"] for r in stage1_runs]}}
    for workers in options.workers:
        if workers != least:
            with run.step(f"stage 1, {workers} worker process(es), run 1"):
                once = stage1_run(workers, 0)
            scale[str(workers)] = {**once, "runs_tps": [once["tps"]]}
    confluent = _median(confluent_runs, _tps)
    return _peer_dict(confluent, confluent_runs), scale


def _faust_and_stage2(
    run: _Run, source: Settings, df: pl.DataFrame
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The faust passthrough over the shared backlog and stage 2 over a flagged backlog of its
    own, ``options.repeats`` runs each in turns, the median run of each reported (``runs_tps``:
    all of them)."""
    repeats = max(1, run.options.repeats)
    faust_forward = [f"bench-{run.tag}.faust-{i}.forward" for i in range(repeats)]
    backlog.make_topics(source, *faust_forward)

    def faust_run(i: int) -> Rate:
        app = source.model_copy(update={"stage2_app_id": f"{source.stage2_app_id}-{i}"})
        return peers.faust_passthrough(app, faust_forward[i], run.total, run.warmup)

    def stage2_run(i: int) -> dict[str, Any]:
        s2 = backlog.scoped(run.s, run.tag, f"stage2-{i}")
        backlog.make_topics(s2)
        return measure_stage2(s2, df, run.warmup, run.options.log_dir)

    faust_runs, stage2_runs = run.alternating(
        ("faust passthrough", faust_run), ("stage 2", stage2_run)
    )
    median = _median(stage2_runs, lambda r: float(r["tps"]))
    faust = _median(faust_runs, _tps)
    return _peer_dict(faust, faust_runs), {**median, "runs_tps": [r["tps"] for r in stage2_runs]}


def _checkpoint_cost(run: _Run, source: Settings) -> dict[str, Any]:
    """Stage 1 over the shared backlog with checkpoints off and every second, ``options.repeats``
    runs of each, alternating (so a slow spell of the machine falls on both); the ratio of their
    median runs (``runs_tps``: all of them). One run of each moved the ratio by 0.15 between
    bench runs of the same code."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "every_1s": []}
    for i in range(max(1, run.options.repeats)):
        for name, interval in (("off", 0.0), ("every_1s", 1.0)):
            scoped = backlog.scoped(
                run.s,
                run.tag,
                f"stage1-checkpoints-{name}-{i}",
                shared_source=source.topic_transactions,
            ).model_copy(update={"stage1_checkpoint_interval_s": interval})
            backlog.make_topics(scoped)
            with run.step(f"stage 1, checkpoints {name}, run {i + 1}"):
                runs[name].append(measure_stage1(scoped, run.total, run.warmup, 1))
    out: dict[str, Any] = {}
    for name, measured in runs.items():
        median: dict[str, Any] = _median(measured, lambda r: float(r["tps"]))
        out[name] = {**median, "runs_tps": [r["tps"] for r in measured]}
    out["ratio"] = round(out["every_1s"]["tps"] / out["off"]["tps"], 3)
    return out


def _stage2_exactly_once(run: _Run, df: pl.DataFrame) -> dict[str, Any]:
    """Stage 2 in Kafka transactions over its own backlog (an error entry on a broker given
    by address that has no transactions)."""
    scoped = backlog.scoped(run.s, run.tag, "stage2-eos").model_copy(
        update={"stage2_exactly_once": True}
    )
    backlog.make_topics(scoped)
    try:
        return measure_stage2(scoped, df, run.warmup, run.options.log_dir)
    except backlog.BenchError as exc:
        return {"error": str(exc)}


def _latency(run: _Run, df: pl.DataFrame) -> dict[str, Any]:
    """Stage-1 and end-to-end latency at the offered rate, then the broker floor at it."""
    options = run.options
    lat_warmup = max(1, int(options.offered_tps * 3))
    lat_total = min(run.total, lat_warmup + int(options.offered_tps * options.latency_seconds))
    warmup = min(lat_warmup, lat_total // 5)
    lat = backlog.scoped(run.s, run.tag, "latency")
    backlog.make_topics(lat)
    with run.step(f"latency at {options.offered_tps:,.0f} tx/s offered"):
        latency = measure_latency(
            lat, df.head(lat_total), options.offered_tps, warmup, options.log_dir
        )
    floor = backlog.scoped(run.s, run.tag, "floor")
    floor_forward = f"bench-{run.tag}.floor.forward"
    backlog.make_topics(floor, floor_forward)
    with run.step(f"broker floor at {options.offered_tps:,.0f} tx/s offered"):
        latency.update(
            measure_broker_floor(
                floor, floor_forward, df.head(lat_total), options.offered_tps, warmup
            )
        )
    return latency


def _broker_kind(settings: Settings) -> str:
    if settings.bootstrap_servers:
        return f"external ({settings.bootstrap_servers})"
    if settings.broker_kind == "kafka":
        return "Apache Kafka (started for the bench)"
    return "embedded (Tansu)"


def run_bench(
    settings: Settings, options: BenchOptions, say: Say = lambda _: None
) -> dict[str, Any]:
    settings = backlog.absolute(settings)
    result: dict[str, Any] = {"machine": machine(), "versions": versions(_broker_kind(settings))}
    n = options.transactions
    warmup = backlog.warmup_for(n)
    total = n + warmup
    logging.getLogger("streams.kafka.topics").setLevel(logging.WARNING)  # one line per topic set
    with broker_for(settings) as s:
        run = _Run(s, backlog.run_tag(), options, total, warmup, say)
        with run.step(f"simulating {total:,} transactions"):
            df = backlog.history(total, options.seed)
        source = backlog.scoped(s, run.tag, "source")
        backlog.make_topics(source)
        with run.step("filling the transactions backlog"):
            backlog.transaction_backlog(source, df)
        confluent, scale = _confluent_and_stage1(run, source)
        checkpoints = _checkpoint_cost(run, source)
        with run.step("stage 1, shipped rules against the attribute rule set"):
            with_attributes = backlog.history(total, options.seed, attributes=True)
            rules_cost = measure_rules_cost(
                s, run.tag, with_attributes, total, warmup, options.repeats
            )
        faust, stage2 = _faust_and_stage2(run, source, df)
        peer_rates = {
            "confluent_passthrough_tps": confluent["tps"],
            "faust_passthrough_tps": faust["tps"],
            "confluent_passthrough": confluent,
            "faust_passthrough": faust,
        }
        if settings.bootstrap_servers or settings.broker_kind == "kafka":  # not on Tansu
            with run.step("stage 2, exactly-once"):
                stage2["exactly_once"] = _stage2_exactly_once(run, df)
        latency = _latency(run, df)
        restore: dict[str, Any] = {}
        if options.restore_days > 0:
            with run.step("stage-1 restore against history length"):
                restore = measure_restore(
                    s,
                    run.tag,
                    options.restore_days,
                    options.restore_multiples,
                    options.log_dir,
                    say,
                )
    with run.step(f"memory of {options.memory_cards:,} cards"):
        memory = measure_memory(settings, options.memory_cards)
    first = scale[str(min(options.workers))]
    result.update(
        {
            "transactions": n,
            "warmup": warmup,
            "partitions": settings.partitions,
            "peers": peer_rates,
            "stage1": first,
            "checkpoints": checkpoints,
            "rules": rules_cost,
            "restore": restore,
            "stage2": stage2,
            "latency_ms": latency,
            "memory": memory,
            "scale": {
                "workers": scale,
                "speedup": {k: round(v["tps"] / first["tps"], 2) for k, v in scale.items()},
            },
            "seconds": run.timings,
        }
    )
    result["ratios"] = ratios(result)
    result["targets"] = targets(result)
    return result
