"""Whether the broker answers, as the worker sees it: log lines, the ``broker_up`` metric, the
outage count, and retrying calls while it is away."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streams.errors import BrokerError
from streams.kafka.broker_wait import wait_for_broker
from streams.observability import metrics as m
from streams.settings import Settings
from streams.stage1.stats import Stage1Stats

log = logging.getLogger(__name__)
_DOWN_CODES = {KafkaError._ALL_BROKERS_DOWN}


class BrokerWatch:
    def __init__(self, settings: Settings, stats: Stage1Stats, stop: threading.Event):
        self.settings = settings
        self.stats = stats
        self.stop = stop
        self.up = True
        self._probe_at = 0.0

    def error_cb(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb`` for every client of the worker."""
        if err.code() in _DOWN_CODES:
            self.set(False, err.str())
        else:
            log.warning("kafka: %s", err.str())

    def set(self, up: bool, why: str = "") -> None:
        if up != self.up:
            if up:
                log.warning("broker reachable again; carrying on")
            else:
                self.stats.outages += 1
                log.warning("broker unreachable (%s); waiting for it", why)
        self.up = up
        m.set_broker_up(m.STAGE1, up)

    def probe(self, consumer: Any) -> None:
        """While the broker is marked down, ask it for metadata every 2 s."""
        now = time.monotonic()
        if self.up or now - self._probe_at < 2.0:
            return
        self._probe_at = now
        try:
            consumer.list_topics(self.settings.topic_transactions, timeout=1.0)
        except KafkaException:
            return
        self.set(True)

    def wait(self) -> bool:
        """Poll until the broker answers (backoff 0.5 s to 15 s); False if stopped first."""
        if not wait_for_broker(self.settings, m.STAGE1, self.stop):
            return False
        self.set(True)
        return True

    def retry(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()`` until it succeeds, with backoff, while the broker is away."""
        delay = 0.5
        while True:
            try:
                return call()
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.code() in (KafkaError._TIMED_OUT,)):
                    raise
                if self.stop.is_set():
                    raise BrokerError(f"{what}: {err.str()} (stopping)") from None
                self.set(False, f"{what}: {err.str()}")
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
