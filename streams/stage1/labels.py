"""The labels feed: delayed fraud labels from the labels topic into the shared state (terminal
label table, online classifier), through ``PartitionedScreener.learn_label``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from confluent_kafka import TopicPartition

from streams.errors import MessageError
from streams.logging_setup import where
from streams.recovery.state import PartitionedScreener
from streams.schema import parse_timestamp
from streams.settings import Settings
from streams.stage1.connect import LabelsConsumer
from streams.stage1.stats import Stage1Stats
from streams.stage1.telemetry import Stage1Telemetry

log = logging.getLogger(__name__)


def decode_label(value: bytes | None) -> tuple[str, str, int, int]:
    """A label message to (transaction_id, terminal_id, ts_ms, fraud)."""
    try:
        obj = orjson.loads(value or b"")
        return (
            str(obj["transaction_id"]),
            str(obj["terminal_id"]),
            parse_timestamp(obj["timestamp"]),
            int(obj["fraud"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"bad label: {exc}") from None


class LabelFeed:
    def __init__(
        self,
        settings: Settings,
        source: LabelsConsumer,
        state: PartitionedScreener,
        stats: Stage1Stats,
        telemetry: Stage1Telemetry | None,
    ):
        self.settings = settings
        self.consumer = source.consumer
        self.partitions = source.partitions
        self.state = state
        self.stats = stats
        self.telemetry = telemetry
        self.time: dict[int, int] = {}  # last record timestamp read per label partition

    def drain(self, limit: int = 50_000, timeout: float = 0) -> int:
        """Learn from the labels that have arrived; returns how many."""
        msgs = self.consumer.consume(num_messages=limit, timeout=timeout)
        learn = self.state.learn_label
        before = self.state.classifier.learned
        n = 0
        for msg in msgs:
            if msg.error():
                continue
            try:
                label = decode_label(msg.value())
            except MessageError as exc:
                log.warning(
                    "bad label at %s: %s", where(msg.topic(), msg.partition(), msg.offset()), exc
                )
                continue
            known_at = msg.timestamp()[1]
            learn(*label, known_at)
            self.time[msg.partition() or 0] = known_at
            n += 1
        self.stats.labels += n
        if self.telemetry is not None:
            self.telemetry.labels(n, self.state.classifier.learned - before)
        return n

    def await_time(self, upto_ms: int, stopped: Callable[[], bool]) -> None:
        """``labels_wait``: read the labels topic until every partition of it has reached
        ``upto_ms`` in event time or its end, so the batch sees every label known by then."""
        topic = self.settings.topic_labels
        while not stopped():
            behind = [p for p in self.partitions if self.time.get(p, -1) < upto_ms]
            if not behind:
                return
            if self.drain(timeout=0.1):
                continue
            ends = [
                self.consumer.get_watermark_offsets(TopicPartition(topic, p), 5, False)[1]
                for p in behind
            ]
            done = self.consumer.position([TopicPartition(topic, p) for p in behind])
            if all(tp.offset >= end for tp, end in zip(done, ends, strict=True)):
                return

    def close(self) -> None:
        self.consumer.close()
