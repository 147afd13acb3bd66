"""Stage 2 in Kafka transactions (``FRAUD_STAGE2_EXACTLY_ONCE``, ``stage2 --exactly-once``).

faust's ``processing_guarantee="exactly_once"`` keeps one transactional producer per source
partition (transactional id ``<app id>-<topic group>-<partition>``) and, at each commit, sends
the partition's committable offsets into that producer's transaction and commits it. That alone
does not make stage 2 exactly-once (a faust pass-through app killed -9 holds; stage 2 did not,
see docs/recovery.md): faust sends an output to the transaction of the output's *destination*
partition and outside any transaction when it cannot name one, its commit runs on a timer in
the middle of batches whose outputs are sent and whose offsets are not yet committable, and the
seek-back of ``streams.kafka.faust_commit`` reprocesses records whose outputs are already in an
open transaction. Here:

- ``TransactionalOutput`` sends every output of a record (decision, card-table changelog
  record) into the transaction of the record's *source* partition, the one whose offsets it
  commits, through faust's producer;
- ``CommitBarrier`` (``streams.kafka.faust_transactions``) makes a commit wait until no batch
  is between its first output and its ack (and holds new batches meanwhile), so a transaction
  commits exactly the outputs of the offsets it commits;
- the consumer aborts a source partition's open transaction before it seeks the partition back
  to its committed offset (``streams.kafka.faust_commit``), so reprocessed records do not add
  their outputs a second time.

The transactional sends go through aiokafka (faust's producer), which costs more event-loop time
per record than the at-least-once path's confluent-kafka producer; the bench measures the
default (at-least-once) path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from streams.errors import BrokerError
from streams.kafka.faust_transactions import transactional_id
from streams.stage2.output import ANY_PARTITION, Delivery, Record


class TransactionalDelivery(Delivery):
    def __init__(self, futures: list[Awaitable[Any]]):
        super().__init__(len(futures))
        self.futures = futures


class TransactionalOutput:
    """The stage-2 batch producer (``streams.stage2.batches.Producer``) in exactly-once mode:
    each record goes into the open transaction of its source partition."""

    def __init__(self, app: Any):
        self.app = app

    async def produce(self, records: list[Record], source_topic: str | None = None) -> Delivery:
        if source_topic is None:
            raise BrokerError("exactly-once output needs the records' source topic")
        futures = []
        for topic, key, value, headers, partition in records:
            futures.append(
                await self.send(topic, key, value, headers, partition, source_topic, partition)
            )
        return TransactionalDelivery(futures)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: int,
        source_topic: str,
        source_partition: int,
        timestamp_s: float | None = None,
    ) -> Awaitable[Any]:
        tid = transactional_id(self.app, source_topic, source_partition)
        try:
            return await self.app.producer.send(
                topic,
                key,
                value,
                None if partition == ANY_PARTITION else partition,
                timestamp_s,
                headers,
                transactional_id=tid,
            )
        except Exception as exc:  # no producer for a revoked partition, a fenced one
            raise BrokerError(f"transactional send to {topic} ({tid}) failed: {exc!r}") from exc

    async def delivered(self, delivery: Delivery) -> None:
        futures = getattr(delivery, "futures", [])
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise BrokerError(
                f"{len(failed)} of {len(futures)} stage-2 outputs not delivered: {failed[0]!r}"
            )
