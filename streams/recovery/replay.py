"""``fraudstream replay``: reprocess an event-time range of a topic with the same code.

For a transactions topic, both stages run in this process: the stage-1 screeners (one per
partition, as in the worker, ``streams.stage1.state``) and the stage-2 ``Scorer`` with the
same card context as the stage-2 app (``apply_card_context``). Every partition is read from the
beginning, all partitions merged in record-timestamp order (ties by partition, then offset):

* records before ``--from`` only build state (card windows, anomaly models, stage-2 card
  context), exactly as the live worker's rebuild does, so features are right from the first
  replayed record;
* transactions with ``from <= event time < to`` are decided and emitted;
* a partition ends at its first record stamped at or after ``--to`` (record timestamps are event
  times: the producer sets them), or at its end.

Labels are applied in event time through the same ``LabelGate`` as the worker's: a label becomes
visible once the replay's event time reaches its record timestamp (the transaction time plus the
label delay, as ``produce`` stamps it), so a replay is deterministic. A live worker applies a label
that arrives after its time at its next segment (unless ``FRAUD_LABELS_WAIT``), so terminal-risk
features and the online probability of a replay can differ from what the live run computed when
labels arrived late; with labels on time they are equal.

For the flagged topic, only stage 2 runs (records before ``--from`` build the card context).

Decisions keep their live format plus ``replay_id`` and ``supersedes`` (true when written to
the live decisions topic: they replace earlier decisions of the same transaction id; false in a
shadow topic). Wall-clock time goes in a header (``replayed_at_ms``), never in the value, so the
same range replayed with the same rules, model and ``replay_id`` gives identical bytes.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from streams.errors import MessageError
from streams.kafka import clients
from streams.recovery.reader import partitions_of, read_topic
from streams.rules.loader import load_rules
from streams.schema import Transaction, encode
from streams.settings import Settings
from streams.stage1.labelgate import Label
from streams.stage1.labels import decode_label
from streams.stage1.state import PartitionedScreener, decode_transaction
from streams.stage2.context import apply_card_context
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import ModelHolder, Scorer

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any], int], None]
"""Receives each replayed decision and its event time (ms)."""


@dataclass
class ReplayStats:
    replay_id: str
    topic: str
    to_topic: str | None
    supersedes: bool
    read: int = 0
    warmup: int = 0  # transactions before --from, fed into the state only
    replayed: int = 0  # transactions in the range, decided
    skipped: int = 0  # records that do not decode (their dead letters are elsewhere)
    labels: int = 0
    flagged: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["actions"] = dict(self.actions)
        return out


def merged_records(
    settings: Settings, topic: str, end_ms: int | None, buffer: int = 20_000
) -> Iterator[Message]:
    """Every partition of ``topic`` from the beginning, merged by record timestamp (ties:
    partition, offset); a partition stops at its first record stamped ``>= end_ms``."""
    consumer = clients.reader(settings, "fraudstream-replay")
    try:
        parts = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        queues: dict[int, deque[Message]] = {p: deque() for p in parts}
        open_parts = set(parts)  # may still deliver records
        paused: set[int] = set()
        at_end: set[int] = set()  # reported their end and have not grown since
        heads: list[tuple[int, int, int]] = []  # (timestamp, partition, offset) of queue heads
        idle_since = time.monotonic()

        def fill() -> None:
            nonlocal idle_since
            msgs = consumer.consume(num_messages=5000, timeout=0.5)
            if msgs:
                idle_since = time.monotonic()
            for msg in msgs:
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(p)
                    continue
                if p not in open_parts:
                    continue
                at_end.discard(p)
                ts = msg.timestamp()[1]
                if end_ms is not None and ts >= end_ms:
                    open_parts.discard(p)
                    consumer.pause([TopicPartition(topic, p)])
                    continue
                if not queues[p]:
                    heapq.heappush(heads, (ts, p, msg.offset() or 0))
                queues[p].append(msg)
                if len(queues[p]) > buffer and p not in paused:
                    consumer.pause([TopicPartition(topic, p)])
                    paused.add(p)

        while True:
            # the merge may only take a head once every open partition has one
            while any(not queues[p] for p in open_parts):
                open_parts.difference_update(p for p in at_end if not queues[p])
                if not any(not queues[p] for p in open_parts):
                    break
                if time.monotonic() - idle_since > 10.0:
                    open_parts.intersection_update(p for p in parts if queues[p])
                    break
                fill()
            if not heads:
                return
            _, p, _ = heapq.heappop(heads)
            msg = queues[p].popleft()
            if queues[p]:
                nxt = queues[p][0]
                heapq.heappush(heads, (nxt.timestamp()[1], p, nxt.offset() or 0))
            elif p in paused:
                consumer.resume([TopicPartition(topic, p)])
                paused.discard(p)
            yield msg
    finally:
        consumer.close()


def load_labels(settings: Settings, end_ms: int | None) -> list[tuple[int, Label]]:
    """Labels visible before ``end_ms``: (visible at, label), in visibility order (record
    timestamp = transaction time + label delay)."""
    out: list[tuple[int, int, int, Label]] = []
    for msg in read_topic(settings, settings.topic_labels, idle_timeout_s=5.0, missing_ok=True):
        visible = msg.timestamp()[1]
        if end_ms is not None and visible >= end_ms:
            continue
        try:
            label = decode_label(msg.value())
        except MessageError:
            continue
        out.append((visible, msg.partition() or 0, msg.offset() or 0, label))
    out.sort(key=lambda x: x[:3])
    return [(v, label) for v, _, _, label in out]


class Replayer:
    """Both stages over a merged topic range; ``run(sink)`` hands each decision to ``sink``."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        start_ms: int | None,
        end_ms: int | None,
        rules_dir: Path | None = None,
        model_dir: Path | None = None,
        to_topic: str | None = None,
        replay_id: str | None = None,
    ):
        self.settings = settings
        self.topic = topic
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.stage2_only = topic == settings.topic_flagged
        self.rules = None if self.stage2_only else load_rules(rules_dir or settings.rules_dir)
        champion = ModelHolder(model_dir or settings.model_dir).model
        challenger = ModelHolder(settings.challenger_dir).model if settings.challenger_dir else None
        self.scorer = Scorer(champion, DecisionPolicy.load(settings.policy_file), challenger)
        self.cards: dict[str, dict[str, Any]] = {}
        self.supersedes = to_topic is None or to_topic == settings.topic_decisions
        self.stats = ReplayStats(
            replay_id=replay_id or uuid.uuid4().hex[:12],
            topic=topic,
            to_topic=to_topic or settings.topic_decisions,
            supersedes=self.supersedes,
        )

    def in_range(self, ts_ms: int) -> bool:
        return (self.start_ms is None or ts_ms >= self.start_ms) and (
            self.end_ms is None or ts_ms < self.end_ms
        )

    def _finish(self, decision: dict[str, Any], ts_ms: int, sink: Sink) -> None:
        decision["replay_id"] = self.stats.replay_id
        decision["supersedes"] = self.supersedes
        self.stats.replayed += 1
        self.stats.actions[str(decision["action"])] += 1
        sink(decision, ts_ms)

    def _stage2(self, records: list[tuple[dict[str, Any], int, bool]], sink: Sink) -> None:
        """Score flagged records in order; all of them update the card context, the ones in
        the range are emitted."""
        if not records:
            return
        decided = self.scorer.score_batch([r for r, _, _ in records])
        for decision, (_, ts_ms, emit) in zip(decided, records, strict=True):
            card = str(decision.get("card_id"))
            self.cards[card] = apply_card_context(self.cards.get(card, {}), decision, ts_ms)
            if emit:
                self._finish(decision, ts_ms, sink)

    def run(self, sink: Sink, progress: Callable[[int], None] | None = None) -> ReplayStats:
        if self.stage2_only:
            self._run_stage2(sink, progress)
        else:
            self._run_both(sink, progress)
        return self.stats

    def _run_stage2(self, sink: Sink, progress: Callable[[int], None] | None) -> None:
        batch: list[tuple[dict[str, Any], int, bool]] = []
        for msg in merged_records(self.settings, self.topic, self.end_ms):
            self.stats.read += 1
            try:
                record = orjson.loads(msg.value() or b"")
                if not isinstance(record, dict) or "features" not in record:
                    raise ValueError("not a flagged record")
                ts = int(record.get("ts_ms", msg.timestamp()[1]))
            except (orjson.JSONDecodeError, ValueError, TypeError):
                self.stats.skipped += 1
                continue
            emit = self.in_range(ts)
            self.stats.warmup += 0 if emit else 1
            batch.append((record, ts, emit))
            if len(batch) >= self.settings.stage2_batch_size:
                self._stage2(batch, sink)
                batch = []
            if progress is not None:
                progress(1)
        self._stage2(batch, sink)

    def _run_both(self, sink: Sink, progress: Callable[[int], None] | None) -> None:
        assert self.rules is not None
        state = PartitionedScreener(self.settings, self.rules)
        schema = self.rules.schema.checked()
        # every partition from the start, as a worker's rebuild has them: a partition created
        # at its first record would miss the labels released (and trimmed) before it
        consumer = clients.reader(self.settings)
        try:
            for p in partitions_of(consumer, self.topic):
                state.reset(p)
        finally:
            consumer.close()
        labels = load_labels(self.settings, self.end_ms)
        released = 0
        size = self.settings.stage1_batch_size
        batch: list[tuple[int, Transaction]] = []

        def screen(batch: list[tuple[int, Transaction]]) -> None:
            nonlocal released
            horizon = max(tx.ts_ms for _, tx in batch)  # the gate holds each until its time
            while released < len(labels) and labels[released][0] <= horizon:
                visible, label = labels[released]
                state.learn_label(*label, known_at_ms=visible)
                released += 1
            self.stats.labels = released
            groups: dict[int, list[Transaction]] = {}
            for p, tx in batch:
                groups.setdefault(p, []).append(tx)
            flagged: list[tuple[dict[str, Any], int, bool]] = []
            for p, txs in groups.items():
                out = state.screen(p, txs)
                for i, is_flagged in enumerate(out.flagged.tolist()):
                    tx = txs[i]
                    emit = self.in_range(tx.ts_ms)
                    if not emit:
                        self.stats.warmup += 1
                    if is_flagged:
                        self.stats.flagged += 1
                        # through JSON, exactly as stage 2 receives it
                        record = orjson.loads(encode(out.flagged_record(i)))
                        flagged.append((record, tx.ts_ms, emit))
                    elif emit:
                        self._finish(orjson.loads(encode(out.decision(i))), tx.ts_ms, sink)
            self._stage2(flagged, sink)

        for msg in merged_records(self.settings, self.topic, self.end_ms):
            self.stats.read += 1
            if progress is not None:
                progress(1)
            try:
                tx = decode_transaction(msg.value(), schema)
            except MessageError:
                self.stats.skipped += 1
                continue
            batch.append((msg.partition() or 0, tx))
            if len(batch) >= size:
                screen(batch)
                batch = []
        if batch:
            screen(batch)


def estimate_records(settings: Settings, topic: str) -> int | None:
    """Records in ``topic`` from its watermarks (a lower bound on the embedded broker)."""
    consumer = clients.reader(settings)
    try:
        total = 0
        for p in partitions_of(consumer, topic):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            total += max(high - low, 0)
        return total
    except Exception:
        return None
    finally:
        consumer.close()


def replay(
    settings: Settings,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    to_topic: str | None = None,
    rules_dir: Path | None = None,
    model_dir: Path | None = None,
    replay_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Replay into ``to_topic`` (default: the live decisions topic); returns what was done."""
    replayer = Replayer(
        settings, topic, start_ms, end_ms, rules_dir, model_dir, to_topic, replay_id
    )
    out_topic = replayer.stats.to_topic or settings.topic_decisions
    out = clients.CheckedProducer(settings)

    def sink(decision: dict[str, Any], ts_ms: int) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("replay_id", replayer.stats.replay_id.encode()),
            ("replayed_at_ms", str(int(time.time() * 1000)).encode()),
        ]
        out.send(
            out_topic,
            encode(decision),
            str(decision["transaction_id"]).encode(),
            timestamp=ts_ms,
            headers=headers,
        )
        out.poll()

    stats = replayer.run(sink, progress)
    out.close(f"of the decisions of replay {stats.replay_id}")
    return stats
