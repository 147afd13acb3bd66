"""confluent-kafka clients built from the one settings object."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.errors import BrokerError
from streams.kafka.embedded import EmbeddedBroker, wait_until_ready
from streams.settings import Settings

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def _common(settings: Settings) -> dict[str, Any]:
    """Connection settings, with librdkafka's own log lines routed to Python logging."""
    return {**settings.kafka_common(), "logger": _LIBRDKAFKA_LOG}


def producer(settings: Settings, **extra: Any) -> Producer:
    conf = {
        **_common(settings),
        "linger.ms": 2,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "compression.type": "none",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",  # Java/aiokafka-compatible: same key, same partition
    }
    conf.update(extra)
    return Producer(conf)


def consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    conf = {
        **_common(settings),
        "group.id": group,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,  # offsets stored only after outputs are delivered
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "fetch.wait.max.ms": 5,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    conf.update(extra)
    return Consumer(conf)


def admin(settings: Settings) -> AdminClient:
    return AdminClient(_common(settings))


def check_reachable(settings: Settings, timeout_s: float = 10.0) -> None:
    try:
        wait_until_ready(settings.bootstrap_servers or "", timeout_s)
    except BrokerError:
        raise BrokerError(
            f"Kafka broker at {settings.bootstrap_servers} is unreachable: check the address "
            "(--bootstrap / FRAUD_BOOTSTRAP_SERVERS), that the broker runs and, if it needs them, "
            "FRAUD_SECURITY_PROTOCOL and the FRAUD_SASL_* credentials"
        ) from None


@contextlib.contextmanager
def broker_for(settings: Settings) -> Iterator[Settings]:
    """Yield settings pointing at a reachable broker, starting the embedded one if none is set."""
    if settings.bootstrap_servers:
        check_reachable(settings)
        yield settings
        return
    with EmbeddedBroker() as broker:
        yield settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
