"""Stage-1 state per partition, and rebuilding it from the source topic.

Cards are keyed to partitions (the producer partitions by card), so each partition a worker owns
gets its own ``Screener``: its own feature engine (card windows) and its own anomaly model. What
comes from the labels topic is shared by every partition of a worker: the terminal label table
and the online classifier. Per-partition state depends only on that partition's records in offset
order, so it can be rebuilt exactly by reading the partition again from the beginning (a worker
that takes over a partition does this up to the committed offset before processing it), and it
does not depend on how many workers share the topic or how the records were batched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from streams.errors import MessageError, ValidationError
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS
from streams.kafka import clients
from streams.recovery.labelgate import LabelGate, release_labels, segments
from streams.rules.model import RuleSet
from streams.schema import Transaction, decode
from streams.settings import Settings
from streams.stage1.screen import Scored, ScreenedBatch, Screener, judge
from streams.stage1.screen import merge_batches as merge_batches  # where it used to live

log = logging.getLogger(__name__)

MAX_TRANSACTION_BYTES = 64 * 1024
"""A transaction message larger than this is a dead letter of kind ``too_large``."""


class TooLargeError(ValidationError):
    kind = "too_large"


def decode_transaction(value: bytes | None) -> Transaction:
    """Stage 1's one gate: size, then UTF-8 JSON, then fields (``MessageError`` subclasses)."""
    if value is not None and len(value) > MAX_TRANSACTION_BYTES:
        raise TooLargeError(
            f"message of {len(value)} bytes exceeds the {MAX_TRANSACTION_BYTES}-byte limit"
        )
    return decode(value)


class PartitionedScreener:
    """One ``Screener`` per partition; terminal labels and the online classifier shared."""

    def __init__(self, settings: Settings, rules: RuleSet):
        self.settings = settings
        self.rules = rules
        shared = Screener.from_settings(settings, rules)
        self.terminals = shared.engine.terminals
        self.classifier = shared.classifier
        self.card_out = shared.card_out
        self.parts: dict[int, Screener] = {}
        # labels wait here for the stream's event time (streams.recovery.labelgate)
        self.gate = LabelGate()
        self.positions: dict[int, int] = {}  # transactions screened per partition
        self.horizons: dict[int, int] = {}  # event time of each partition's segment start

    def _new(self) -> Screener:
        screener = Screener.from_settings(self.settings, self.rules)
        screener.engine.terminals = self.terminals
        screener.classifier = self.classifier
        screener.card_out = self.card_out  # one object: partitions' rows are judged together
        return screener

    def partition(self, partition: int) -> Screener:
        screener = self.parts.get(partition)
        if screener is None:
            screener = self.parts[partition] = self._new()
        return screener

    def reset(self, partition: int) -> Screener:
        """Fresh (empty) state for a partition."""
        screener = self.parts[partition] = self._new()
        self.positions[partition] = 0
        return screener

    def drop(self, partition: int) -> None:
        self.parts.pop(partition, None)
        self.positions.pop(partition, None)

    def set_rules(self, rules: RuleSet) -> None:
        self.rules = rules
        for screener in self.parts.values():
            screener.rules = rules

    def screen(self, partition: int, txs: list[Transaction]) -> ScreenedBatch:
        """Screen a partition's next records, in segments cut at fixed positions of the
        partition's stream, each after the labels its event time allows."""
        return self.screen_many([(partition, txs)])

    def screen_many(self, batches: Iterable[tuple[int, list[Transaction]]]) -> ScreenedBatch:
        """``screen`` of several partitions' next records (a poll), as one batch in the order
        given: each segment is scored after its labels are released, in order, exactly as by
        one ``screen`` call per partition; the rules then judge all rows in one evaluation."""
        every = self.settings.stage1_batch_size
        parts: list[tuple[Screener, Scored]] = []
        for partition, txs in batches:
            screener = self.partition(partition)
            position = self.positions.get(partition, 0)
            for a, b in segments(position, len(txs), every):
                if (position + a) % every == 0:  # a segment starts: the classifier's horizon
                    self.horizons[partition] = txs[a].ts_ms
                horizon = self.horizons.get(partition, txs[a].ts_ms)
                segment = txs[a:b] if b - a < len(txs) else txs
                release_labels(screener, self.gate, segment, horizon)
                parts.append((screener, screener.score(segment)))
            self.positions[partition] = position + len(txs)
        return judge(parts)

    def learn_label(
        self,
        transaction_id: str,
        terminal: str,
        ts_ms: int,
        fraud: int,
        known_at_ms: int | None = None,
    ) -> None:
        """A label from the labels topic (shared by all partitions), held until the stream
        reaches ``known_at_ms``: its record timestamp, or the transaction time plus the label
        delay when the record has none."""
        if known_at_ms is None or known_at_ms <= 0:
            known_at_ms = ts_ms + LABEL_DELAY_DAYS * DAY_MS
        self.gate.offer((transaction_id, terminal, ts_ms, fraud), known_at_ms)


def rebuild_partitions(
    settings: Settings,
    screeners: dict[int, Screener],
    topic: str,
    ends: dict[int, int],
    stop: threading.Event | None = None,
    chunk: int = 5000,
) -> dict[int, int]:
    """Feed records ``[0, ends[p])`` of each partition ``p`` through ``screeners[p]`` without
    emitting; all partitions with one consumer, each in offset order.

    Reads from the beginning (the log start, after retention) until the end offset or the end
    of the partition; messages that fail ``decode_transaction`` are skipped, as the worker sent
    them to the dead-letter topic. Returns the transactions replayed per partition.
    """
    rebuilt = dict.fromkeys(ends, 0)
    pending = {p for p, end in ends.items() if end > 0}
    if not pending:
        return rebuilt
    consumer = clients.consumer(
        settings,
        f"{settings.stage1_group}-rebuild",
        **{"enable.auto.commit": False, "enable.partition.eof": True},
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
    try:
        while pending and not (stop is not None and stop.is_set()):
            groups: dict[int, list[Transaction]] = {}
            for msg in consumer.consume(num_messages=chunk, timeout=0.5):
                p = msg.partition() or 0
                if p not in pending:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)  # the log ends before the offset (a recreated topic)
                    continue
                offset = msg.offset() or 0
                if offset >= ends[p]:
                    pending.discard(p)
                    continue
                with contextlib.suppress(MessageError):  # a dead letter, not state
                    groups.setdefault(p, []).append(decode_transaction(msg.value()))
                if offset >= ends[p] - 1:
                    pending.discard(p)
            for p, txs in groups.items():
                screeners[p].screen(txs)
                rebuilt[p] += len(txs)
    finally:
        consumer.close()
    return rebuilt
