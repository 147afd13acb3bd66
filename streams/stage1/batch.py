"""One poll of the transactions topic, decoded and split by partition.

Every message of a partition the worker owns is decoded and validated (``decode_transaction``);
one that fails goes to the dead letters and counts as processed (its offset is committed with
the batch). Consume errors are logged, end-of-partition events skipped, and messages of a
partition revoked while the poll was in flight dropped (their new owner processes them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from streams.errors import MessageError
from streams.rules.attributes import AttributeSchema
from streams.schema import Transaction
from streams.stage1.state import decode_transaction

log = logging.getLogger(__name__)
_EOF = KafkaError._PARTITION_EOF


@dataclass
class PolledBatch:
    """Per partition, the decoded transactions and their messages (same order); the next
    offset to commit per (topic, partition) of every owned message, decoded or dead."""

    groups: dict[int, tuple[list[Transaction], list[Message]]] = field(default_factory=dict)
    last: dict[tuple[str, int], int] = field(default_factory=dict)

    def offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o + 1) for (t, p), o in self.last.items()]

    def latest_ts_ms(self) -> int:
        return max(tx.ts_ms for txs, _ in self.groups.values() for tx in txs)


def split(
    msgs: list[Any],
    owned: Collection[int],
    dead_letter: Callable[[Message, MessageError], None],
    on_first: Callable[[], None] | None = None,
    schema: AttributeSchema | None = None,
) -> PolledBatch:
    """Decode ``msgs`` by partition; ``on_first`` runs before the first owned message is
    handled (e.g. to begin a Kafka transaction that its dead letter belongs to); ``schema``:
    the declared attributes a transaction must match (None: no check)."""
    batch = PolledBatch()
    groups, last = batch.groups, batch.last
    decode = decode_transaction
    for msg in msgs:
        err = msg.error()
        if err is not None:
            if err.code() != _EOF:
                log.warning("consume error: %s", err.str())
            continue
        p = msg.partition()
        if p not in owned:  # revoked while the batch was in flight
            continue
        if on_first is not None and not last:
            on_first()
        last[(msg.topic(), p)] = msg.offset()
        try:
            tx = decode(msg.value(), schema)
        except MessageError as exc:
            dead_letter(msg, exc)
            continue
        group = groups.get(p)
        if group is None:
            group = groups[p] = ([], [])
        group[0].append(tx)
        group[1].append(msg)
    return batch
