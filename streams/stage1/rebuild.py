"""Rebuilding partitions' stage-1 state from the source topic and the labels topic.

A worker that takes over partitions reads each from its beginning up to the committed offset,
with the labels topic from its beginning beside it, through a private ``PartitionedScreener``
whose label gate releases each label at the same event time as in a live run: before each chunk
of transactions, the labels are read up to the chunk's latest event time. The rebuilt partitions
then join the worker's live state (``PartitionedScreener.adopt``). So card windows, anomaly
models, calibration windows and the per-partition online classifiers continue exactly as if the
partition had been processed without interruption.
"""

from __future__ import annotations

import threading

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from streams.errors import MessageError
from streams.kafka import clients
from streams.schema import Transaction
from streams.settings import Settings
from streams.stage1.connect import labels_consumer
from streams.stage1.labels import LabelFeed
from streams.stage1.state import PartitionedScreener, decode_transaction
from streams.stage1.stats import Stage1Stats


def rebuild_partitions(
    settings: Settings,
    state: PartitionedScreener,
    topic: str,
    ends: dict[int, int],
    stop: threading.Event | None = None,
    chunk: int = 5000,
) -> dict[int, int]:
    """Rebuild partitions ``ends`` (records ``[0, ends[p])`` of each) into ``state``; returns
    the transactions replayed per partition. Messages that fail ``decode_transaction`` are
    skipped, as the worker sent them to the dead-letter topic. Stopped mid-way (``stop``), the
    partitions are left out of ``state``."""
    private = PartitionedScreener(settings, state.rules)
    for p in ends:
        private.reset(p)
    rebuilt = dict.fromkeys(ends, 0)
    pending = {p for p, end in ends.items() if end > 0}
    stopped = stop.is_set if stop is not None else (lambda: False)
    if pending:
        labels = LabelFeed(settings, labels_consumer(settings), private, Stage1Stats(), None)
        consumer = clients.consumer(
            settings,
            f"{settings.stage1_group}-rebuild",
            **{"enable.auto.commit": False, "enable.partition.eof": True},
        )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        try:
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
                        tx = decode_transaction(msg.value())
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
                        rebuilt[p] += len(txs)
            # the labels the live state has released and the rebuild has not: the adopted
            # classifiers learn them from the backlog (``PartitionedScreener.adopt``)
            live = state.gate.released_upto
            if live > private.gate.released_upto and not stopped():
                labels.await_time(live, stopped)
                for _ in private.gate.for_terminals(live):
                    pass
        finally:
            consumer.close()
            labels.close()
    if stopped():
        return rebuilt
    for p in ends:
        state.adopt(p, private)
    return rebuilt
