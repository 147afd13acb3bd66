"""When a batch counts as done: its outputs acknowledged, then its offsets stored or committed.

*At-least-once* (``AtLeastOnce``): a batch's offsets are stored only after every output produced
before them (its flagged records, decisions and dead letters) has been acknowledged by the broker;
librdkafka commits stored offsets every second, on revoke and on close. One batch's outputs are
in flight while the next one is decoded and screened: ``settle`` (called before the next batch
produces anything, when the topic is idle, on revoke and on close) waits until the producer has
nothing outstanding, which then can only be that batch's outputs, and stores its offsets. The
producer reports failed deliveries only (``streams.stage1.connect``); one during that wait stops
the worker before the offsets are stored.

*Exactly-once* (``ExactlyOnce``): one Kafka transaction per batch holds its outputs and its
consumed offsets (``send_offsets_to_transaction``). When a transaction must be aborted, the
batch's partitions are rewound (``rewind``: state rebuilt to the committed offset, consumer
seeked back) and the batch does not count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.errors import BrokerError
from streams.stage1.broker_watch import BrokerWatch
from streams.stage1.checkpointing import Snapshot
from streams.stage1.screen import ScreenedBatch

log = logging.getLogger(__name__)
STOP_GRACE_S = 15.0
"""After a stop request, how long undelivered outputs may wait for the broker before giving up."""


@dataclass
class DoneBatch:
    """A processed batch whose outputs have been produced."""

    offsets: list[TopicPartition]
    consumed: int  # messages of the poll
    outs: list[ScreenedBatch]
    sent: list[int]  # sent_ms of the approved transactions
    seconds: float  # processing time, poll to outputs produced
    checkpoint: Snapshot | None = None  # at-least-once: written once the outputs are delivered


Finish = Callable[[DoneBatch], None]


class AtLeastOnce:
    def __init__(
        self,
        producer: Any,
        consumer: Any,
        stop: threading.Event,
        finish: Finish,
        owned: Callable[[], Collection[int]],
    ):
        self.producer = producer
        self.consumer = consumer
        self.stop = stop
        self.finish = finish
        self.owned = owned  # partitions still assigned (a lost one's offsets are not stored)
        self.pending: DoneBatch | None = None
        self.failed: dict[tuple[str, str], int] = {}  # (topic, error name) -> outputs

    def on_failure(self, err: KafkaError | None, msg: Any) -> None:
        """The producer's delivery report (failures only)."""
        if err is not None:
            key = (msg.topic(), f"{err.name()} ({err.str()})")
            self.failed[key] = self.failed.get(key, 0) + 1

    def begin(self) -> None:
        """Nothing to open per batch."""

    def done(self, batch: DoneBatch) -> None:
        """``batch``'s outputs are produced: its offsets wait for ``settle``."""
        self.pending = batch

    def settle(self) -> None:
        """Wait for the outputs in flight, then store the pending batch's offsets."""
        if self.pending is None:
            return
        self._flush()
        self._check()
        self._store()

    def _store(self) -> None:
        batch, self.pending = self.pending, None
        assert batch is not None
        owned = self.owned()
        offsets = [tp for tp in batch.offsets if tp.partition in owned]
        if offsets:
            self.consumer.store_offsets(offsets=offsets)
        self.finish(batch)

    def _check(self) -> None:
        """Raise if an output failed; the pending batch then never counts (its offsets are not
        stored, so it is processed again after a restart)."""
        if self.failed:
            errors, self.failed, self.pending = self.failed, {}, None
            raise BrokerError(undelivered(errors))

    def _flush(self) -> None:
        """Wait until every output is acknowledged, through broker outages."""
        waited = 0.0
        give_up: float | None = None
        while True:
            remaining = self.producer.flush(1.0)
            if not remaining:
                return
            waited += 1.0
            if waited % 10 == 0:
                log.warning("%d outputs waiting for the broker (%.0fs)", remaining, waited)
            if self.stop.is_set():
                give_up = give_up or time.monotonic() + STOP_GRACE_S
                if time.monotonic() > give_up:
                    raise BrokerError(
                        f"stopping with {remaining} outputs undelivered; their offsets are not "
                        "committed, so they are processed again after a restart"
                    )

    def hand_over(self) -> None:
        """On revoke: settle, then commit exactly what was delivered."""
        self.settle()
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            log.debug("commit on revoke: %s", exc)

    def close(self) -> None:
        """Deliver what is in flight (10 s at most), store and commit."""
        try:
            if self.pending is not None and not self.producer.flush(10):
                self._check()
                self._store()
            else:
                self.producer.flush(10)
            self.consumer.commit(asynchronous=False)
        except Exception as exc:  # nothing stored yet, or broker gone: offsets stay as they were
            log.debug("final commit skipped: %s", exc)


def undelivered(errors: dict[tuple[str, str], int]) -> str:
    """One line: which outputs the broker refused and why, what to do, and that their
    transactions are not lost (the batch's offsets are not stored)."""
    what = "; ".join(f"{n} to {topic}: {why}" for (topic, why), n in list(errors.items())[:3])
    hint = ""
    if any("AUTHORIZATION_FAILED" in why for _, why in errors):
        hint = (
            " (the worker's principal may not write there: grant it WRITE on the topic, see "
            "docs/operations.md, Security)"
        )
    return (
        f"outputs not delivered, stopping: {what}{hint}; the batch's offsets are not "
        "committed, so its transactions are screened again after a restart"
    )


class ExactlyOnce:
    def __init__(
        self,
        producer: Any,
        consumer: Any,
        watch: BrokerWatch,
        finish: Finish,
        rewind: Callable[[list[TopicPartition]], None],
    ):
        self.producer = producer
        self.consumer = consumer
        self.watch = watch
        self.finish = finish
        self.rewind = rewind
        self.in_transaction = False

    def on_failure(self, err: KafkaError | None, msg: Any) -> None:
        """Failed deliveries surface as a failed ``commit_transaction``."""

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.in_transaction = True

    def settle(self) -> None:
        """Every batch is committed in ``done``."""

    def hand_over(self) -> None:
        """Offsets travel in the transactions: nothing to commit on revoke."""

    def done(self, batch: DoneBatch) -> None:
        """Commit the batch's transaction (outputs and offsets), or abort and rewind it."""
        retry = self.watch.retry
        group = self.consumer.consumer_group_metadata()
        try:
            retry(
                "send offsets",
                lambda: self.producer.send_offsets_to_transaction(batch.offsets, group, 30),
            )
            retry("commit transaction", lambda: self.producer.commit_transaction(30))
            self.in_transaction = False
            self.finish(batch)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if not err.txn_requires_abort():
                raise BrokerError(f"transaction failed: {err.str()}") from None
            why = err.str()
        self.abort(batch.offsets, why)

    def abort(self, offsets: list[TopicPartition], why: str) -> None:
        """Abort the open transaction and rewind the partitions of ``offsets`` (the batch's) to
        their committed offsets: the batch is screened again."""
        log.warning("transaction aborted (%s); rewinding its partitions", why)
        self.watch.retry("abort transaction", lambda: self.producer.abort_transaction(30))
        self.in_transaction = False
        self.rewind(offsets)

    def close(self) -> None:
        try:
            if self.in_transaction:
                self.producer.abort_transaction(10)
        except Exception as exc:
            log.debug("final abort skipped: %s", exc)
        self.in_transaction = False


DeliveryGuarantee = AtLeastOnce | ExactlyOnce
"""How the worker counts a batch done: at-least-once or exactly-once."""
