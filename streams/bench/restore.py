"""Stage-1 restore time against history length (``restore`` in the bench JSON).

For each history length (a multiple of ``days`` simulated days of the handbook's 5,000 cards and
10,000 terminals, labels beside the transactions): a stage-1 worker process screens the whole
history and checkpoints, is killed with SIGKILL once a checkpoint covers the history's end, and
a new worker starts while new transactions wait on the topic. Measured: seconds from the new
process's start to the first output of a new transaction (``seconds_by_history``), the recovery
the worker logs, and the checkpoint bytes. For the shortest history a third worker with
checkpoints off rebuilds from the topic's beginning (the fallback), for comparison.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from streams.bench.backlog import BenchError, make_topics, scoped
from streams.checkpoint.topic import read_latest
from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.kafka import clients
from streams.process import WorkerProcess
from streams.settings import Settings

NEW_TRANSACTIONS = 2000  # held back from the history: what the restarted worker screens first
CHECKPOINT_INTERVAL_S = 5.0
_RECOVERY = re.compile(r"recovery took ([0-9.]+)s")


def _committed(settings: Settings) -> int:
    consumer = clients.consumer(settings, settings.stage1_group)
    try:
        topic = settings.topic_transactions
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def _wait(what: str, done: Callable[[], bool], worker: WorkerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if not worker.alive:
            raise BenchError(f"{what}: the worker exited\n{worker.log()[-2000:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout_s:.0f} s\n{worker.log()[-2000:]}")
        time.sleep(1.0)


class _FirstOutput:
    """A consumer of the stage-1 outputs from their current ends: the first record after."""

    def __init__(self, settings: Settings):
        self.consumer = clients.consumer(settings, f"{settings.stage1_group}-first-output")
        tps = []
        for topic in (settings.topic_decisions, settings.topic_flagged):
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
                tps.append(TopicPartition(topic, p, max(high, 0)))
        self.consumer.assign(tps)

    def wait(self, worker: WorkerProcess, timeout_s: float) -> float:
        """Monotonic time of the first record (waits up to ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for msg in self.consumer.consume(100, timeout=0.05):
                    if msg.error() is None:
                        return time.monotonic()
                if not worker.alive:
                    raise BenchError(f"the restarted worker exited\n{worker.log()[-2000:]}")
            raise BenchError(f"no output of a new transaction within {timeout_s:.0f} s")
        finally:
            self.consumer.close()


def _recovery_seconds(worker: WorkerProcess) -> float:
    found = _RECOVERY.findall(worker.log())
    return float(found[-1]) if found else float("nan")


def _restart(settings: Settings, log_dir: Path, name: str, **env: str) -> dict[str, Any]:
    first = _FirstOutput(settings)
    worker = WorkerProcess("stage1", settings, log_dir, name=name, **env)
    started = time.monotonic()
    worker.start()
    try:
        seen = first.wait(worker, 600)
        worker.wait_log("recovery took", 60)
        return {
            "seconds_to_first_new": round(seen - started, 2),
            "recovery_seconds": _recovery_seconds(worker),
        }
    finally:
        worker.kill()


def _screen_history(s: Settings, history: Any, log_dir: Path, name: str) -> dict[int, Any]:
    """A worker screens ``history`` (on the topics already) until a checkpoint covers its
    end, then is killed; the checkpoints."""
    partitions = list(range(s.partitions))

    def covered() -> bool:
        found, _ = read_latest(s, partitions)
        return sum(c.offset for c in found.values()) >= history.height

    first = WorkerProcess("stage1", s, log_dir, name=name).start()
    try:
        timeout = 60 + history.height / 2000
        _wait("the history screened", lambda: _committed(s) >= history.height, first, timeout)
        _wait("a checkpoint at the history's end", covered, first, timeout_s=120)
    finally:
        first.kill()
    return read_latest(s, partitions)[0]


def measure_restore(
    settings: Settings,
    tag: str,
    days: int,
    multiples: tuple[int, ...],
    log_dir: Path,
    say: Callable[[str], None] = lambda _: None,
    seed: int = 11,
) -> dict[str, Any]:
    by_history: dict[str, Any] = {}
    fallback: dict[str, Any] = {}
    for multiple in multiples:
        s = scoped(settings, tag, f"restore-{multiple}x").model_copy(
            update={"stage1_checkpoint_interval_s": CHECKPOINT_INTERVAL_S}
        )
        make_topics(s)
        say(f"restore: simulating {days * multiple} days")
        df = read_handbook_frame(
            simulate(customers=5000, terminals=10000, days=days * multiple, seed=seed)
        )
        history, new = df.head(df.height - NEW_TRANSACTIONS), df.tail(NEW_TRANSACTIONS)
        say(f"restore: {history.height:,} transactions and their labels to the topics")
        produce_history(history, s)
        say("restore: the first worker screens the history")
        checkpoints = _screen_history(s, history, log_dir, f"restore-{multiple}x-first")
        produce_history(new.drop("TX_FRAUD"), s)
        say("restore: restarting from the checkpoints")
        row = _restart(s, log_dir, f"restore-{multiple}x-restart")
        row.update(
            {
                "history_days": days * multiple,
                "transactions": history.height,
                "checkpoint_bytes": sum(c.size for c in checkpoints.values()),
                "cards": int(history["CUSTOMER_ID"].n_unique()),
            }
        )
        row["checkpoint_bytes_per_card"] = round(row["checkpoint_bytes"] / row["cards"], 1)
        by_history[f"{multiple}x"] = row
        if multiple == min(multiples):
            say("restore: the fallback, a full rebuild without checkpoints")
            produce_history(new.drop("TX_FRAUD"), s)  # new transactions again, to screen
            fallback = _restart(
                s, log_dir, f"restore-{multiple}x-full", FRAUD_STAGE1_CHECKPOINT_INTERVAL_S="0"
            )
            fallback["history"] = f"{multiple}x"
    seconds = [r["seconds_to_first_new"] for r in by_history.values()]
    return {
        "days_per_multiple": days,
        "seconds_by_history": {k: r["seconds_to_first_new"] for k, r in by_history.items()},
        "flat_within": round(max(seconds) / min(seconds) - 1, 3) if seconds else None,
        "histories": by_history,
        "without_checkpoints": fallback,
    }
