"""The demo's view of the outputs: every decision and dead letter, read back from Kafka."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.kafka import clients
from streams.kafka.dlq import header
from streams.settings import Settings


class DecisionWatcher:
    """Reads the decisions and dead-letter topics from the beginning, without a group."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.consumer = clients.consumer(settings, "demo-watch", **{"enable.auto.commit": False})
        parts = []
        for topic in (settings.topic_decisions, settings.topic_dlq):
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(parts)
        self.decisions: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.conflicts = 0
        self.dead_letters = 0
        self.latencies_ms: list[float] = []
        self.started = time.monotonic()

    def poll(self, timeout: float) -> int:
        msgs = self.consumer.consume(num_messages=10_000, timeout=timeout)
        now_ms = time.time() * 1000
        for msg in msgs:
            if msg.error():
                continue
            if msg.topic() == self.settings.topic_dlq:
                self.dead_letters += 1
                continue
            decision = orjson.loads(msg.value() or b"null")
            tid = str(decision["transaction_id"])
            previous = self.decisions.get(tid)
            if previous is not None:
                self.duplicates += 1
                self.conflicts += previous != decision
            self.decisions[tid] = decision
            sent = header(msg, "sent_ms")
            if sent is not None:
                self.latencies_ms.append(now_ms - int(sent))
        return len(msgs)

    def complete(self, expected: set[str], dead_letters: int) -> bool:
        return (
            len(self.decisions) >= len(expected)
            and self.dead_letters >= dead_letters
            and (expected.issubset(self.decisions.keys()))
        )

    def close(self) -> None:
        self.consumer.close()


@contextlib.contextmanager
def live_view(
    watcher: DecisionWatcher, expected: int, malformed: int
) -> Iterator[Callable[[], None]]:
    """A live terminal table (rates, flag rate, decisions, latency, dead letters)."""
    if not sys.stdout.isatty():
        last = [0.0]

        def log_line() -> None:
            if time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                print(
                    f"decisions {len(watcher.decisions)}/{expected}, "
                    f"dead letters {watcher.dead_letters}/{malformed}",
                    file=sys.stderr,
                )

        yield log_line
        return
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        decisions = watcher.decisions
        flagged = sum(1 for d in decisions.values() if d.get("stage") == 2)
        actions: dict[str, int] = {}
        for d in decisions.values():
            actions[d["action"]] = actions.get(d["action"], 0) + 1
        elapsed = max(time.monotonic() - watcher.started, 1e-9)
        lat = sorted(watcher.latencies_ms[-5000:])
        p99 = lat[int(len(lat) * 0.99) - 1] if lat else 0.0
        table = Table(title="fraudstream demo (live)")
        for col in (
            "decisions",
            "rate/s",
            "flag rate",
            "approve",
            "review",
            "decline",
            "p99 ms",
            "dead letters",
        ):
            table.add_column(col, justify="right")
        table.add_row(
            f"{len(decisions)}/{expected}",
            f"{len(decisions) / elapsed:,.0f}",
            f"{flagged / max(len(decisions), 1):.2%}",
            str(actions.get("approve", 0)),
            str(actions.get("review", 0)),
            str(actions.get("decline", 0)),
            f"{p99:.1f}",
            f"{watcher.dead_letters}/{malformed}",
        )
        return table

    with Live(render(), refresh_per_second=4, transient=False) as live:
        yield lambda: live.update(render())
