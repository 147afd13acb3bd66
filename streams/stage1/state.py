"""Stage-1 state per partition.

Cards are keyed to partitions (the producer partitions by card), so each partition a worker owns
gets its own ``Screener``: its own feature engine (card windows), anomaly model, flag policy and
online classifier (which learns the labels of the partition's own transactions). Only the
terminal label table is shared by the partitions of a worker; it holds every label released so
far and its delay filter makes its features a function of event time alone. So a partition's
state depends only on its records in offset order and on the labels in event time, not on how
many workers share the topic, which partitions a worker owns or how the records were batched,
and it can be rebuilt exactly (``streams.stage1.rebuild``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from streams.errors import ValidationError
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS
from streams.rules.attributes import AttributeSchema
from streams.rules.model import RuleSet
from streams.schema import Transaction, decode
from streams.settings import Settings
from streams.stage1.labelgate import ClassifierFeed, LabelGate, release_to_terminals, segments
from streams.stage1.screen import Scored, ScreenedBatch, Screener, judge, merge_batches

log = logging.getLogger(__name__)

COMPACT_EVERY_LABELS = 50_000
MAX_TRANSACTION_BYTES = 64 * 1024
"""A transaction message larger than this is a dead letter of kind ``too_large``."""


class TooLargeError(ValidationError):
    kind = "too_large"


def decode_transaction(value: bytes | None, schema: AttributeSchema | None = None) -> Transaction:
    """Stage 1's one gate: size, then UTF-8 JSON, then fields, then the declared attributes
    of ``schema`` (the rule directory's ``schema.yaml``); ``MessageError`` subclasses."""
    if value is not None and len(value) > MAX_TRANSACTION_BYTES:
        raise TooLargeError(
            f"message of {len(value)} bytes exceeds the {MAX_TRANSACTION_BYTES}-byte limit"
        )
    tx = decode(value)
    if schema is not None:
        schema.validate(tx.raw)
    return tx


class PartitionedScreener:
    """One ``Screener`` per partition (card windows, anomaly model, online classifier, flag
    policy); the terminal label table is shared by every partition of the worker."""

    def __init__(self, settings: Settings, rules: RuleSet):
        self.settings = settings
        self.rules = rules
        shared = Screener.from_settings(settings, rules)
        self.terminals = shared.engine.terminals
        # partitions at different event times share it: compacted against the earliest one
        self.terminals.auto_compact = False
        self._compacted_at = 0
        self.card_out = shared.card_out
        self.parts: dict[int, Screener] = {}
        # labels wait here for the stream's event time (streams.stage1.labelgate)
        self.gate = LabelGate()
        self.feeds: dict[int, ClassifierFeed] = {}
        self.positions: dict[int, int] = {}  # transactions screened per partition
        self.latest: dict[int, int] = {}  # event time of each partition's latest transaction
        self.horizons: dict[int, int] = {}  # event time of each partition's segment start

    def _new(self) -> Screener:
        screener = Screener.from_settings(self.settings, self.rules)
        self._attach(screener)
        return screener

    def _attach(self, screener: Screener) -> None:
        screener.engine.terminals = self.terminals
        screener.card_out = self.card_out  # one object: partitions' rows are judged together

    @property
    def learned(self) -> int:
        """Labels the partitions' classifiers have learnt."""
        return sum(s.classifier.learned for s in self.parts.values())

    def partition(self, partition: int) -> Screener:
        screener = self.parts.get(partition)
        if screener is None:
            screener = self.reset(partition)
        return screener

    def reset(self, partition: int) -> Screener:
        """Fresh (empty) state for a partition."""
        screener = self.parts[partition] = self._new()
        self.positions[partition] = 0
        self.latest.pop(partition, None)
        self.horizons.pop(partition, None)
        self.feeds[partition] = ClassifierFeed(self.gate)
        return screener

    def adopt(self, partition: int, other: PartitionedScreener) -> None:
        """Take over ``partition`` as rebuilt in ``other`` (a private state fed the partition's
        history and the labels in event time): its screener joins this worker's terminal table,
        and its classifier continues with the labels it has not learnt. ``other``'s gate must
        have released every label up to this gate's ``released_upto``: the classifier takes
        the labels up to there from ``other``, and this gate's later ones."""
        if other.gate.released_upto < self.gate.released_upto:
            raise RuntimeError(
                f"adopt: partition {partition}'s labels are released up to "
                f"{other.gate.released_upto}, behind this worker's {self.gate.released_upto}: "
                "its classifier would miss the labels in between"
            )
        if other.terminals is not self.terminals:
            # this worker's table may have been compacted against its partitions' time, later
            # than this partition's: the labels it still needs come from the state it was
            # rebuilt in (released here long ago: known at their time plus the delay)
            self.terminals.restore_older(
                other.terminals, self.gate.released_upto - LABEL_DELAY_DAYS * DAY_MS
            )
        screener = other.parts[partition]
        self._attach(screener)
        screener.rules = self.rules
        self.parts[partition] = screener
        self.positions[partition] = other.positions.get(partition, 0)
        if partition in other.latest:
            self.latest[partition] = other.latest[partition]
        if partition in other.horizons:
            self.horizons[partition] = other.horizons[partition]
        else:
            self.horizons.pop(partition, None)
        rebuilt = other.feeds[partition]
        through = max(self.gate.released_upto, other.gate.released_upto)
        self.feeds[partition] = ClassifierFeed(
            self.gate, rebuilt.learned_through, rebuilt.pending(through), through
        )

    def take_labels(self, other: PartitionedScreener) -> None:
        """Continue with ``other``'s labels state (terminal table, gate): a worker that owns no
        partition yet takes over the one restored from a checkpoint."""
        if self.parts:
            raise RuntimeError("take_labels: this state already screens partitions")
        self.terminals = other.terminals
        self.terminals.auto_compact = False
        self._compacted_at = self.terminals.labels_seen
        self.gate = other.gate

    def drop(self, partition: int) -> None:
        self.parts.pop(partition, None)
        self.positions.pop(partition, None)
        self.horizons.pop(partition, None)
        self.feeds.pop(partition, None)
        self.latest.pop(partition, None)

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
        one ``screen`` call per partition; the rules then judge the rows in one evaluation.
        When a later segment of a partition in the poll is about to learn a fraud label of a row
        scored earlier in the poll and not judged yet, the rows scored so far are judged first:
        the recall controller must learn how that row was judged (a poll of a backlog can span
        days of event time)."""
        every = self.settings.stage1_batch_size
        parts: list[tuple[Screener, Scored]] = []
        judged: list[ScreenedBatch] = []
        for partition, txs in batches:
            screener = self.partition(partition)
            feed = self.feeds[partition]
            position = self.positions.get(partition, 0)
            unjudged: set[str] = set()  # this partition's rows scored in this poll, not judged
            for a, b in segments(position, len(txs), every):
                if (position + a) % every == 0:  # a segment starts: the classifier's horizon
                    self.horizons[partition] = txs[a].ts_ms
                horizon = self.horizons.get(partition, txs[a].ts_ms)
                segment = txs[a:b] if b - a < len(txs) else txs
                release_to_terminals(screener, self.gate, segment)
                if unjudged and any(t in unjudged for t in feed.frauds_to_learn(horizon)):
                    judged.append(judge(parts))
                    parts = []
                    unjudged = set()
                feed.learn(screener.classifier, horizon)
                parts.append((screener, screener.score(segment)))
                if b < len(txs):  # a later segment of this partition follows in the poll
                    unjudged.update(tx.transaction_id for tx in segment)
            self.positions[partition] = position + len(txs)
            if txs:
                self.latest[partition] = txs[-1].ts_ms
        self.gate.trim([f.cursor for f in self.feeds.values()])
        if self.terminals.labels_seen - self._compacted_at > COMPACT_EVERY_LABELS:
            self._compacted_at = self.terminals.labels_seen
            if self.latest and len(self.latest) == len(self.parts):
                self.terminals.compact_all(min(self.latest.values()))
        if parts:
            judged.append(judge(parts))
        return merge_batches(judged)

    def learn_label(
        self,
        transaction_id: str,
        terminal: str,
        ts_ms: int,
        fraud: int,
        card: str = "",
        amount: float = 0.0,
        known_at_ms: int | None = None,
    ) -> None:
        """A label from the labels topic (shared by all partitions), held until the stream
        reaches ``known_at_ms``: its record timestamp, or the transaction time plus the label
        delay when the record has none."""
        if known_at_ms is None or known_at_ms <= 0:
            known_at_ms = ts_ms + LABEL_DELAY_DAYS * DAY_MS
        self.gate.offer((transaction_id, terminal, ts_ms, fraud, card, amount), known_at_ms)
