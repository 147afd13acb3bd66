"""Partition ownership: on assignment, each partition's state is recovered up to the committed
offset (from its latest checkpoint and the records after it, or from the partition's beginning
when it has none: ``streams.stage1.rebuild``) before it is processed; on revoke or loss, its
state is dropped. ``rewind`` undoes an aborted batch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.checkpoint.position import LabelsPosition
from streams.logging_setup import where
from streams.settings import Settings
from streams.stage1.broker_watch import BrokerWatch
from streams.stage1.checkpointing import Checkpointer
from streams.stage1.rebuild import recover_partitions
from streams.stage1.state import PartitionedScreener
from streams.stage1.stats import Stage1Stats

log = logging.getLogger(__name__)


class Assignment:
    def __init__(
        self,
        settings: Settings,
        state: PartitionedScreener,
        stats: Stage1Stats,
        watch: BrokerWatch,
        stop: threading.Event,
        checkpointer: Checkpointer,
    ):
        self.settings = settings
        self.state = state
        self.stats = stats
        self.watch = watch
        self.stop = stop
        self.checkpointer = checkpointer
        self.consumer: Any = None
        self.before_revoke: Callable[[], None] = lambda: None
        # the live labels feed resumes where a restored labels state left off
        self.take_labels: Callable[[LabelsPosition], None] | None = None

    def subscribe(self, consumer: Any, before_revoke: Callable[[], None]) -> None:
        """Join the group; ``before_revoke`` hands over what was delivered (at-least-once)."""
        self.consumer, self.before_revoke = consumer, before_revoke
        topic = self.settings.topic_transactions
        log.info("joining group %s on %s", self.settings.stage1_group, topic)
        consumer.subscribe(
            [topic], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost
        )

    def committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        result: list[TopicPartition] = self.watch.retry(
            "committed offsets", lambda: self.consumer.committed(tps, timeout=10)
        )
        return result

    def rebuild(self, committed: list[TopicPartition]) -> None:
        """Each partition's state, recovered up to its committed offset."""
        if not committed:
            return
        started = time.perf_counter()
        topic = committed[0].topic
        ends = {tp.partition: max(tp.offset, 0) for tp in committed}
        done = recover_partitions(
            self.settings, self.state, topic, ends, self.stop, self.take_labels
        )
        if self.stop.is_set():  # stopped mid-rebuild: process none of these partitions
            for p in ends:
                self.state.drop(p)
            log.info("stopping: rebuild of %s abandoned", sorted(ends))
            return
        self.stats.rebuilt.update(done.replayed)
        for p in sorted(ends):
            checkpoint = done.checkpoints.get(p)
            restored_at = checkpoint.offset if checkpoint is not None else None
            self.checkpointer.recovered(p, ends[p], done.manifest_ids.get(p, -1), restored_at)
            if checkpoint is not None:
                self.stats.restored[p] = checkpoint.offset
                log.info(
                    "%s: state restored from checkpoint %d at offset %d (%d bytes), then %d "
                    "records replayed to offset %d",
                    where(topic, p, None),
                    checkpoint.id,
                    checkpoint.offset,
                    checkpoint.size,
                    done.replayed.get(p, 0),
                    ends[p],
                )
            else:
                log.info(
                    "%s: state rebuilt from %d records before offset %d (no checkpoint)",
                    where(topic, p, None),
                    done.replayed.get(p, 0),
                    ends[p],
                )
        log.info("recovery took %.2fs", time.perf_counter() - started)

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [where(p.topic, p.partition, p.offset) for p in partitions])
        if partitions:
            self.rebuild(self.committed(partitions))
        self.stats.assigned = sorted(set(self.stats.assigned) | {p.partition for p in partitions})

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.before_revoke()
        self.forget(partitions)
        log.info("revoked %s", [where(p.topic, p.partition, p.offset) for p in partitions])

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.forget(partitions)
        log.warning("lost %s", [where(p.topic, p.partition, p.offset) for p in partitions])

    def forget(self, partitions: list[TopicPartition]) -> None:
        gone = {p.partition for p in partitions}
        for p in gone:
            self.state.drop(p)
            self.checkpointer.forget(p)
        self.stats.assigned = [p for p in self.stats.assigned if p not in gone]

    def rewind(self, offsets: list[TopicPartition]) -> None:
        """Undo an aborted batch: rebuild its partitions' state to the committed offsets and
        seek the consumer back there."""
        self.stats.rewinds += 1
        committed = self.committed(offsets)
        self.rebuild(committed)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
