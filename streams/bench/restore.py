"""Stage-1 restore time against history length (``restore`` in the bench JSON).

For each history length (a multiple of ``days`` simulated days of the handbook's 5,000 cards and
10,000 terminals, labels beside the transactions): a stage-1 worker process screens the whole
history and checkpoints, is killed with SIGKILL once a checkpoint covers the history's end, and
a new worker starts while new transactions wait on the topic. Measured: seconds from the new
process's start to the first output of a new transaction (``seconds_by_history``), the recovery
the worker logs, and the checkpoint bytes. For the shortest history a third worker with
checkpoints off rebuilds from the topic's beginning (the fallback), for comparison.

Stage 2 the same way (``stage2_seconds_by_history``): a stage-2 worker decides every flagged
record of the history (its card table and the table's compacted changelog fill), is killed, and
a new one starts while copies of the last flagged records wait: seconds from its start to its
first decision, which comes once the card table is recovered from the changelog.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.bench.backlog import BenchError, make_topics, scoped
from streams.checkpoint.topic import read_latest
from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.kafka import clients
from streams.process import WorkerProcess
from streams.settings import Settings
from streams.stage2.context import CARD_TABLE

log = logging.getLogger(__name__)
_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
}

NEW_TRANSACTIONS = 2000  # held back from the history: what the restarted worker screens first
CHECKPOINT_INTERVAL_S = 5.0
_RECOVERY = re.compile(r"recovery took ([0-9.]+)s")


def _committed(settings: Settings, group: str | None = None, topic: str | None = None) -> int:
    """Offsets committed by ``group`` (the stage-1 group) on ``topic`` (transactions), summed;
    0 while the group's coordinator cannot answer (a retriable error: Apache Kafka answered
    NOT_COORDINATOR to one of these polls while the worker screened, 2026-12-06)."""
    consumer = clients.consumer(settings, group or settings.stage1_group)
    try:
        topic = topic or settings.topic_transactions
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    except KafkaException as exc:
        err = exc.args[0]
        if not (err.retriable() or err.code() in _COORDINATOR_MOVING):
            raise
        log.info("committed offsets not known yet (%s); asking again", err.str())
        return 0
    finally:
        consumer.close()


def _held(settings: Settings, topic: str) -> tuple[int, int]:
    """(records the topic holds: high - low summed over partitions, its end offsets summed)."""
    consumer = clients.consumer(settings, f"{settings.stage1_group}-bench-sizes")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        bounds = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in meta.partitions
        ]
        return sum(high - low for low, high in bounds), sum(high for _, high in bounds)
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
    """A consumer of ``topics`` (the stage-1 outputs) from their current ends: the first record
    after."""

    def __init__(self, settings: Settings, topics: tuple[str, ...] = ()):
        self.consumer = clients.consumer(settings, f"{settings.stage1_group}-first-output")
        tps = []
        for topic in topics or (settings.topic_decisions, settings.topic_flagged):
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


def _resend_tail(settings: Settings, topic: str, per_partition: int) -> int:
    """Copies of the last records of each partition of ``topic``, to the same partitions."""
    consumer = clients.consumer(
        settings, f"{settings.stage1_group}-bench-tail", **{"enable.partition.eof": True}
    )
    producer = clients.CheckedProducer(settings, 60.0)
    sent = 0
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            if high > low:
                ends[p] = high
        consumer.assign(
            [TopicPartition(topic, p, max(0, e - per_partition)) for p, e in ends.items()]
        )
        pending = set(ends)
        while pending:
            for msg in consumer.consume(1000, timeout=1.0):
                p = msg.partition()
                if msg.error() is not None or (msg.offset() or 0) >= ends[p]:
                    pending.discard(p)
                    continue
                producer.send(topic, msg.value() or b"", msg.key(), partition=p)
                sent += 1
                if (msg.offset() or 0) >= ends[p] - 1:
                    pending.discard(p)
    finally:
        consumer.close()
        producer.close(f"of {sent} copies of {topic}")
    return sent


def _stage2_restart(s: Settings, log_dir: Path, name: str) -> dict[str, Any]:
    """Stage 2 decides every flagged record (its card table fills), is killed with SIGKILL, and
    restarts while copies of the last flagged records wait: seconds from its start to its first
    decision (its card table recovered from the changelog first), and the changelog's size."""
    _, flagged = _held(s, s.topic_flagged)
    first = WorkerProcess("stage2", s, log_dir, name=f"{name}-first").start()
    try:
        timeout = 120 + flagged / 1000
        decided = lambda: _committed(s, s.stage2_app_id, s.topic_flagged) >= flagged  # noqa: E731
        _wait("stage 2 decided the flagged history", decided, first, timeout)
    finally:
        first.kill()
    changelog = f"{s.stage2_app_id}-{CARD_TABLE}-changelog"  # faust's name for the table's
    records, _ = _held(s, changelog)  # an upper bound: compaction leaves gaps
    _resend_tail(s, s.topic_flagged, 50)
    watch = _FirstOutput(s, (s.topic_decisions,))
    worker = WorkerProcess("stage2", s, log_dir, name=f"{name}-restart")
    started = time.monotonic()
    worker.start()
    try:
        seen = watch.wait(worker, 600)
    finally:
        worker.kill()
    return {
        "seconds_to_first_decision": round(seen - started, 2),
        "flagged_records": flagged,
        "changelog_offsets": records,  # high - low: records before compaction
    }


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
        say("restore: stage 2 decides the flagged history, then restarts")
        row["stage2"] = _stage2_restart(s, log_dir, f"restore-{multiple}x-stage2")
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
        "stage2_seconds_by_history": {
            k: r["stage2"]["seconds_to_first_decision"] for k, r in by_history.items()
        },
        "flat_within": round(max(seconds) / min(seconds) - 1, 3) if seconds else None,
        "histories": by_history,
        "without_checkpoints": fallback,
    }
