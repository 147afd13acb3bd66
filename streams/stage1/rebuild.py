"""Recovering partitions' stage-1 state when a worker takes them over.

With a checkpoint (``streams.checkpoint``): the partition's state and its worker's labels state
are loaded into a private ``PartitionedScreener``, the labels consumer resumes from the offsets
the checkpoint saved, and only the source records after the checkpoint's offset, up to the
committed offset, are replayed. Partitions checkpointed in the same round share one private
state. Without one (first start, checkpoints off, an unreadable or future checkpoint), the
partition is read from its beginning with the labels topic from its beginning: the fallback,
logged as such.

Either way the replay goes through the same event-time label gate as a live run (before each
chunk of transactions the labels are read up to the chunk's latest event time), and the rebuilt
partitions then join the worker's live state (``PartitionedScreener.adopt``). A worker that owns
nothing yet takes over the private labels state as well (terminal table, gate, labels offsets),
so it never rereads the labels topic. So card windows, anomaly models, calibration windows and
the per-partition online classifiers continue exactly as if the partition had been processed
without interruption.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from streams.checkpoint.position import LabelsPosition
from streams.checkpoint.stage1 import load_labels, load_partition
from streams.checkpoint.topic import Checkpoint, read_latest
from streams.errors import MessageError, StateError
from streams.kafka import clients
from streams.schema import Transaction
from streams.settings import Settings
from streams.stage1.connect import labels_consumer
from streams.stage1.labels import LabelFeed
from streams.stage1.state import PartitionedScreener, decode_transaction
from streams.stage1.stats import Stage1Stats

log = logging.getLogger(__name__)


@dataclass
class Rebuilt:
    """What a recovery did, per partition."""

    replayed: dict[int, int] = field(default_factory=dict)  # source records replayed
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)  # the ones restored
    manifest_ids: dict[int, int] = field(default_factory=dict)  # latest checkpoint id seen
    lost: dict[int, int] = field(default_factory=dict)  # records retention deleted first


def recover_partitions(
    settings: Settings,
    state: PartitionedScreener,
    topic: str,
    ends: dict[int, int],
    stop: threading.Event | None = None,
    take_labels: Callable[[LabelsPosition], None] | None = None,
) -> Rebuilt:
    """Recover partitions ``ends`` (state after records ``[0, ends[p])``) into ``state``, from
    their checkpoints when there are usable ones. ``take_labels``: called with the labels offsets
    to resume from when ``state`` takes over a private labels state. Stopped mid-way
    (``stop``), the partitions are left out of ``state``."""
    stopped = stop.is_set if stop is not None else (lambda: False)
    done = Rebuilt()
    todo = dict(ends)
    if settings.stage1_checkpoint_interval_s > 0 and todo:
        rounds = _usable_checkpoints(settings, todo, done, stopped)
        for checkpoints in rounds.values():
            if stopped():
                return done
            try:
                restored = _restore(settings, state, topic, checkpoints, todo, stopped, take_labels)
            except StateError as exc:
                log.warning("checkpoint unusable, rebuilding from the beginning: %s", exc)
                continue
            for checkpoint in checkpoints:
                done.checkpoints[checkpoint.partition] = checkpoint
                done.replayed[checkpoint.partition] = restored.replayed.get(checkpoint.partition, 0)
                done.lost.update(restored.lost)
                del todo[checkpoint.partition]
    if todo and not stopped():
        full = _rebuild(settings, state, topic, todo, stopped)
        done.replayed.update(full.replayed)
        done.lost.update(full.lost)
    return done


def _usable_checkpoints(
    settings: Settings, ends: dict[int, int], done: Rebuilt, stopped: Callable[[], bool]
) -> dict[str, list[Checkpoint]]:
    """The partitions' latest checkpoints that can be continued to their ends, by round."""
    try:
        found, done.manifest_ids = read_latest(settings, sorted(ends), stopped)
    except (StateError, KafkaException) as exc:
        log.warning("checkpoints unreadable, rebuilding from the beginning: %s", exc)
        return {}
    rounds: dict[str, list[Checkpoint]] = {}
    for p in sorted(ends):
        checkpoint = found.get(p)
        if checkpoint is None:
            log.info("partition %d: no checkpoint, rebuilding from the beginning", p)
        elif checkpoint.offset > ends[p]:
            log.warning(
                "partition %d: checkpoint at offset %d is past the committed offset %d (offsets "
                "reset?): rebuilding from the beginning",
                p,
                checkpoint.offset,
                ends[p],
            )
        else:
            rounds.setdefault(checkpoint.round, []).append(checkpoint)
    return rounds


def _restore(
    settings: Settings,
    state: PartitionedScreener,
    topic: str,
    checkpoints: list[Checkpoint],
    ends: dict[int, int],
    stopped: Callable[[], bool],
    take_labels: Callable[[LabelsPosition], None] | None,
) -> Rebuilt:
    private = PartitionedScreener(settings, state.rules)
    first = checkpoints[0]
    position = load_labels(
        private, first.labels, f"checkpoint {first.id} of partition {first.partition}"
    )
    starts = {
        c.partition: load_partition(
            private, c.state, f"checkpoint {c.id} of partition {c.partition}"
        )
        for c in checkpoints
    }
    labels = LabelFeed(
        settings, labels_consumer(settings, position.offsets), private, Stage1Stats(), None
    )
    labels.time = dict(position.times)
    try:
        done = _replay(settings, private, labels, topic, starts, ends, stopped)
        _catch_up(state, private, labels, stopped)
        if stopped():
            return done
        handover = not state.parts and take_labels is not None
        if handover:
            state.take_labels(private)
            assert take_labels is not None
            take_labels(labels.position())
    finally:
        labels.close()
    for p in starts:
        state.adopt(p, private)
    return done


def _name(checkpoint: Checkpoint) -> str:
    return f"checkpoint {checkpoint.id} of partition {checkpoint.partition}"


def _rebuild(
    settings: Settings,
    state: PartitionedScreener,
    topic: str,
    ends: dict[int, int],
    stopped: Callable[[], bool],
) -> Rebuilt:
    """The fallback: partitions read from their beginning, labels from theirs."""
    private = PartitionedScreener(settings, state.rules)
    for p in ends:
        private.reset(p)
    labels = LabelFeed(settings, labels_consumer(settings), private, Stage1Stats(), None)
    try:
        done = _replay(settings, private, labels, topic, dict.fromkeys(ends, 0), ends, stopped)
        _catch_up(state, private, labels, stopped)
    finally:
        labels.close()
    if not stopped():
        for p in ends:
            state.adopt(p, private)
    return done


def _catch_up(
    state: PartitionedScreener,
    private: PartitionedScreener,
    labels: LabelFeed,
    stopped: Callable[[], bool],
) -> None:
    """Release ``private``'s labels up to what the live ``state`` has released, so the adopted
    classifiers take the labels in between from their backlog (the live gate has passed them).
    Needed whether or not records were replayed: a checkpoint at the committed offset (nothing
    to replay) may come from a worker whose labels were behind this one's."""
    live = state.gate.released_upto
    if live > private.gate.released_upto and not stopped():
        labels.await_time(live, stopped)
        for _ in private.gate.for_terminals(live):
            pass


def _replay(
    settings: Settings,
    private: PartitionedScreener,
    labels: LabelFeed,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    stopped: Callable[[], bool],
    chunk: int = 5000,
) -> Rebuilt:
    """Screen records ``[starts[p], ends[p])`` of each partition through ``private`` with the
    labels in event time. Messages that fail ``decode_transaction`` are skipped: the worker
    sent them to the dead-letter topic."""
    done = Rebuilt(replayed=dict.fromkeys(starts, 0))
    schema = private.rules.schema.checked()
    pending = {p for p in starts if ends[p] > starts[p]}
    if not pending:
        return done
    consumer = clients.consumer(
        settings,
        f"{settings.stage1_group}-rebuild",
        **{"enable.auto.commit": False, "enable.partition.eof": True},
    )
    try:
        assign = []
        for p in sorted(pending):
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            if starts[p] < low:  # retention deleted records the state needs
                done.lost[p] = low - starts[p]
                log.warning(
                    "partition %d: records %d..%d were deleted before the state was rebuilt "
                    "from them: its card windows and models differ from an uninterrupted run",
                    p,
                    starts[p],
                    low - 1,
                )
            start = max(starts[p], low) if starts[p] > 0 else OFFSET_BEGINNING
            assign.append(TopicPartition(topic, p, start))
        consumer.assign(assign)
        while pending and not stopped():
            groups: dict[int, list[Transaction]] = {}
            for msg in consumer.consume(num_messages=chunk, timeout=0.5):
                p = msg.partition() or 0
                if p not in pending:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)  # the log ends before the offset
                    continue
                offset = msg.offset() or 0
                if offset >= ends[p]:
                    pending.discard(p)
                    continue
                try:
                    tx = decode_transaction(msg.value(), schema)
                except MessageError:  # a dead letter, not state
                    tx = None
                if tx is not None:
                    groups.setdefault(p, []).append(tx)
                if offset >= ends[p] - 1:
                    pending.discard(p)
            if groups:
                latest = max(tx.ts_ms for txs in groups.values() for tx in txs)
                labels.await_time(latest, stopped)
                private.screen_many(groups.items())
                for p, txs in groups.items():
                    done.replayed[p] += len(txs)
    finally:
        consumer.close()
    return done
