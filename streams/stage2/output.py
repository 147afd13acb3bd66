"""Stage-2 outputs (decisions, card-table changelog): a confluent-kafka producer, one delivery
wait per batch.

faust's own producer (aiokafka) costs about 100 µs of event-loop time per record; librdkafka
takes a record in about 2 µs and sends it from its own thread. At-least-once stays true because
``delivered`` returns only when the broker has acknowledged every record of the batch (the
flush runs in a thread, so the event loop goes on meanwhile), and the worker acks a batch's
events, so faust may commit their offsets, only after that (``streams.stage2.pipeline``). A
record that cannot be delivered raises ``BrokerError``: the batch is not acked and is processed
again (decision values are identical for the same input, keyed by transaction id).
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.errors import BrokerError
from streams.kafka import clients
from streams.settings import Settings

Headers = list[tuple[str, str | bytes | None]]
Record = tuple[str, bytes, bytes, Headers, int]
"""topic, key, value, headers, partition (``ANY_PARTITION``: the producer's partitioner)."""
ANY_PARTITION = -1
# librdkafka retries a record for message.timeout.ms (default 300 s) before it reports it failed
FLUSH_TIMEOUT_S = 330.0


class Delivery:
    """The delivery reports of one batch of records."""

    def __init__(self, records: int):
        self.records = records
        self.failed: list[str] = []

    def report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))


class BatchOutput:
    def __init__(self, settings: Settings):
        self._producer = clients.producer(settings)
        self._flushing = asyncio.Lock()  # one flush (and so one delivery-report poller) at a time

    async def send(self, records: list[Record]) -> None:
        """Produce ``records`` and wait until all are delivered."""
        await self.delivered(await self.produce(records))

    async def produce(self, records: list[Record], source_topic: str | None = None) -> Delivery:
        """Hand ``records`` to the producer, in order; ``delivered`` waits for them.
        (``source_topic`` matters only to the exactly-once output.)"""
        delivery = Delivery(len(records))
        on_delivery = delivery.report
        produce = self._producer.produce
        for topic, key, value, headers, partition in records:
            try:
                produce(topic, value, key, partition, headers=headers, on_delivery=on_delivery)
            except BufferError:  # the local queue is full: deliver what it holds, then go on
                await self._flush()
                produce(topic, value, key, partition, headers=headers, on_delivery=on_delivery)
        return delivery

    async def delivered(self, delivery: Delivery) -> None:
        """Return once every record of ``delivery`` is acknowledged by the broker; BrokerError
        if any could not be delivered."""
        if delivery.records:
            await self._flush()
        if delivery.failed:
            raise BrokerError(
                f"{len(delivery.failed)} of {delivery.records} stage-2 outputs not delivered: "
                f"{delivery.failed[0]}"
            )

    async def _flush(self) -> None:
        # Delivery reports run inside flush, in the flushing thread. flush returns once the
        # producer holds no record (a record counts until its report has run), so every
        # report of the records produced before it has run; one flush at a time all the same.
        async with self._flushing:
            remaining = await asyncio.to_thread(self._producer.flush, FLUSH_TIMEOUT_S)
        if remaining:
            raise BrokerError(
                f"{remaining} stage-2 outputs still undelivered after {FLUSH_TIMEOUT_S:.0f}s"
            )

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is left; returns the number of records still undelivered."""
        return int(self._producer.flush(timeout_s))
