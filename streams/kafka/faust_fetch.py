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

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver

from streams.kafka.faust_commit import SafeCommitConsumer

DEFAULT_FETCH_WAIT_MS = 1500  # faust's own value


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


class _Consumer(SafeCommitConsumer, driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """``faust.App`` (``kafka://`` brokers) whose consumer fetches wait ``fetch_max_wait_ms`` and
    never commits past an unprocessed record (``streams.kafka.faust_commit``)."""

    fetch_max_wait_ms: int = DEFAULT_FETCH_WAIT_MS

    def __init__(self, *args: Any, fetch_max_wait_ms: int = DEFAULT_FETCH_WAIT_MS, **kw: Any):
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kw)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
