"""A faust app whose aiokafka consumer waits ``fetch_max_wait_ms`` of our choosing and reads
only committed records.

faust-streaming 0.15 builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` written in the
driver, with no setting. On Apache Kafka that only bounds how long an idle fetch is held (the
broker answers as soon as a record arrives). The embedded broker (Tansu 0.6) holds every fetch
for its whole wait even when records arrive meanwhile, so a flagged record could wait up to 1.5 s
before stage 2 saw it. ``App`` uses the aiokafka transport with a consumer thread that sets the
wait from ``App.fetch_max_wait_ms`` (``FRAUD_STAGE2_FETCH_WAIT_MS``, default 20), as stage 1's
confluent-kafka consumers set ``fetch.wait.max.ms``. Measured on the embedded broker, 15 s at
5,000 tx/s offered: end-to-end p50/p99 819/2,083 ms with 1,500 and 594/1,004 ms with 20 (one run
each; such runs vary by a third).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiokafka
import aiokafka.errors
import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from streams.kafka.faust_commit import SafeCommitConsumer
from streams.kafka.faust_drain import EagerDrainConsumer
from streams.kafka.faust_transactions import CommitBarrier

log = logging.getLogger(__name__)
DEFAULT_FETCH_WAIT_MS = 1500  # faust's own value
PartitionEnds = Callable[[Mapping[tuple[str, int], int]], Mapping[tuple[str, int], int]]
"""Corrects listed partition ends ((topic, partition) -> end offset)."""
TOPIC_CREATE_RETRY_S = 60.0
"""How long a topic creation is retried while brokers are unreachable (then the error stands)."""


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor argument here and hands it to its fetcher in start(),
        # which runs after this
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_WAIT_MS)
        # faust reads read_uncommitted unless it runs its own transactions; stage 1 may write
        # the flagged topic in Kafka transactions (``--exactly-once``), and a record of an
        # aborted one must not be decided (measured: 65 duplicate decisions in one kill test)
        consumer._isolation_level = "read_committed"
        return consumer


class _Consumer(EagerDrainConsumer, SafeCommitConsumer, driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _committed_on_broker(self, tps: list[TP]) -> dict[TP, int | None]:
        thread = self._thread
        consumer = thread._ensure_consumer()
        out: dict[TP, int | None] = {}
        for tp in tps:
            offset = await thread.call_thread(
                consumer.committed, aiokafka.TopicPartition(tp.topic, tp.partition)
            )
            out[tp] = None if offset is None else int(offset)
        return out

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """The listed ends, corrected by ``App.partition_ends`` when it is set: faust's table
        recovery reads a changelog up to these and no further."""
        listed = await super().highwaters(*partitions)
        correct: PartitionEnds | None = getattr(self.app, "partition_ends", None)
        if correct is None:
            return listed
        known = {(tp.topic, tp.partition): end for tp, end in listed.items() if end is not None}
        ends = await asyncio.get_running_loop().run_in_executor(None, correct, known)
        return {tp: ends.get((tp.topic, tp.partition), end) for tp, end in listed.items()}


class _Transport(driver.Transport):
    """faust's aiokafka transport, with our consumer and topic creation that survives a broker
    being down.

    faust 0.15.3 asks only the first broker of its metadata for the controller before it
    creates a topic, and a worker's start declares topics (the assignor's leader topic, the
    card table's changelog): a stage-2 worker starting in the seconds after a broker died, while
    the cluster still lists it, exited with ``NodeNotReadyError`` (seen in the three-node
    failover test). Here each broker is asked in turn, and a retriable failure (a broker
    unreachable, the controller moving) retries the creation with fresh metadata, with backoff,
    for ``TOPIC_CREATE_RETRY_S``."""

    Consumer = _Consumer

    async def _get_controller_node(
        self, owner: Any, client: Any, timeout: int = 30000
    ) -> int | None:
        failed: Exception | None = None
        for broker in client.cluster.brokers():
            request = (
                driver.MetadataRequest_v1([])
                if driver._AIOKAFKA_HAS_API_VERSION
                else driver.MetadataRequest([])
            )
            try:
                result = await owner.wait(client.send(broker.nodeId, request), timeout=timeout)
            except aiokafka.errors.KafkaError as exc:
                if not exc.retriable:
                    raise
                failed = exc  # this broker is unreachable: ask the next one
                continue
            if result.stopped:
                return None
            return int(result.result.controller_id)
        raise failed or aiokafka.errors.NodeNotReadyError("no broker in the metadata")

    async def _create_topic(
        self,
        owner: Any,
        client: Any,
        topic: str,
        partitions: int,
        replication: int,
        **kwargs: Any,
    ) -> None:
        create = super()._create_topic
        deadline = time.monotonic() + TOPIC_CREATE_RETRY_S
        delay = 0.5
        while True:
            try:
                await create(owner, client, topic, partitions, replication, **kwargs)
                return
            except (TimeoutError, aiokafka.errors.KafkaError, RuntimeError) as exc:
                if not _retriable(exc) or owner.should_stop or time.monotonic() > deadline:
                    raise
                log.warning("creating topic %s: %r; retrying in %.1fs", topic, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.force_metadata_update(), 5.0)


def _retriable(exc: BaseException) -> bool:
    """A topic creation failure worth retrying: a broker unreachable or slow, or the
    controller moved (faust raises ``RuntimeError("Invalid controller: ...")`` for that)."""
    if isinstance(exc, aiokafka.errors.KafkaError):
        return bool(exc.retriable)
    if isinstance(exc, RuntimeError):
        return str(exc).startswith("Invalid controller")
    return isinstance(exc, TimeoutError)


class App(faust.App):
    """``faust.App`` (``kafka://`` brokers) whose consumer fetches wait ``fetch_max_wait_ms`` and
    never commits past an unprocessed record (``streams.kafka.faust_commit``). With
    ``partition_ends`` (``streams.kafka.partition_end.true_ends`` bound to the settings), table
    recovery reads each changelog to its last record even where the broker lists a short end."""

    fetch_max_wait_ms: int = DEFAULT_FETCH_WAIT_MS
    partition_ends: PartitionEnds | None = None
    # exactly-once: commits wait for the batches in flight (``faust_transactions``)
    commit_barrier: CommitBarrier | None = None

    def __init__(
        self,
        *args: Any,
        fetch_max_wait_ms: int = DEFAULT_FETCH_WAIT_MS,
        partition_ends: PartitionEnds | None = None,
        **kw: Any,
    ):
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.partition_ends = partition_ends
        super().__init__(*args, **kw)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
