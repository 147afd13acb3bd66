"""confluent-kafka clients built from the one settings object."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from streams.errors import BrokerError, ConfigError
from streams.kafka.embedded import EmbeddedBroker, ProbeLogger
from streams.settings import Settings

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
C = TypeVar("C")


def _common(settings: Settings) -> dict[str, Any]:
    """Connection settings, with librdkafka's own log lines routed to Python logging."""
    return {**settings.kafka_common(), "logger": _LIBRDKAFKA_LOG}


def _make(factory: Callable[[dict[str, Any]], C], conf: dict[str, Any]) -> C:
    """Build a client; a configuration librdkafka refuses (e.g. a missing CA file) is a
    ConfigError, not a traceback."""
    try:
        return factory(conf)
    except KafkaException as exc:
        error = exc.args[0]
        text = error.str() if isinstance(error, KafkaError) else str(error)
        if "ssl.ca.location" in text:
            text += f" (FRAUD_SSL_CA_LOCATION={conf.get('ssl.ca.location')})"
        raise ConfigError(f"Kafka client configuration refused: {text}") from None


def producer(settings: Settings, **extra: Any) -> Producer:
    conf = {
        **_common(settings),
        "linger.ms": settings.linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "compression.type": "none",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",  # Java/aiokafka-compatible: same key, same partition
    }
    conf.update(extra)
    return _make(Producer, conf)


class CheckedProducer:
    """A producer for a finite run of records (a history upload, a replay, a backlog): ``send``
    waits while the local queue is full, ``close`` waits for the broker and raises
    ``BrokerError`` if it refused any record or left one unacknowledged, so a run never ends
    with a silent gap. Delivery reports are for failures only."""

    def __init__(self, settings: Settings, flush_timeout_s: float = 60.0, **extra: Any):
        self.flush_timeout_s = flush_timeout_s
        self.failed: list[str] = []
        self.producer = producer(
            settings, on_delivery=self._report, **{"delivery.report.only.error": True, **extra}
        )

    def _report(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err.str()}")

    def send(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the local queue is full: let librdkafka deliver some
                self.producer.poll(0.05)

    def poll(self) -> None:
        """Serve delivery reports (call now and then in a long run)."""
        self.producer.poll(0)

    def close(self, what: str) -> None:
        """Wait for every record; ``what`` (e.g. "of 10 transactions sent") ends the error."""
        remaining = self.producer.flush(self.flush_timeout_s)
        if self.failed or remaining:
            raise BrokerError(
                f"{len(self.failed)} records refused by the broker and {remaining} "
                f"unacknowledged after {self.flush_timeout_s:.0f} s, {what}; first errors: "
                f"{self.failed[:3]}"
            )


def consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    conf = {
        **_common(settings),
        "group.id": group,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,  # offsets stored only after outputs are delivered
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "fetch.wait.max.ms": settings.fetch_wait_ms,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    conf.update(extra)
    return _make(Consumer, conf)


def consume_ready(consumer: Consumer, max_messages: int, wait_s: float) -> list[Message]:
    """The records ready now (up to ``max_messages``), or else the first to arrive within
    ``wait_s`` and any that came with it.

    ``Consumer.consume(n, timeout)`` returns only when it holds ``n`` records or the timeout
    has passed: at a steady 5,000 records a second and a 10 ms timeout every record waited for
    the rest of the 10 ms (p50 26 ms at a 50 ms timeout, 0.5 ms this way; 2026-12-07, Apache
    Kafka). A backlog still comes in batches of ``max_messages``: the client prefetches it."""
    msgs = consumer.consume(num_messages=max_messages, timeout=0)
    if msgs:
        return msgs
    first = consumer.poll(wait_s)
    if first is None:
        return []
    if max_messages == 1:
        return [first]
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)]


def reader(settings: Settings, group: str = "fraudstream-reader", **extra: Any) -> Consumer:
    """An assign-only consumer (no group membership, no commits) that reads committed records
    and reports partition ends (``enable.partition.eof``)."""
    conf: dict[str, Any] = {
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
    }
    conf.update(extra)
    return consumer(settings, group, **conf)


def admin(settings: Settings) -> AdminClient:
    return _make(AdminClient, _common(settings))


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "9092"
        try:
            out.append((host.strip("[]"), int(port)))
        except ValueError:
            raise ConfigError(
                f"bad bootstrap address {item!r}: expected host:port[,host:port...]"
            ) from None
    return out


def _tcp_open(addresses: list[tuple[str, int]], timeout_s: float) -> bool:
    """True when any address accepts a TCP connection (polled until ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for host, port in addresses:
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def check_reachable(settings: Settings, timeout_s: float | None = None) -> None:
    """Raise BrokerError, in one line saying what to check, unless the configured broker
    answers a metadata request with the configured security settings within ``timeout_s``
    (default ``settings.connect_timeout_s``): a refused login and a failed TLS handshake (a
    broker certificate the configured CA did not sign) are named as such."""
    bootstrap = settings.bootstrap_servers or ""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    protocol = settings.effective_security_protocol()
    if not _tcp_open(_addresses(bootstrap), timeout):
        raise BrokerError(
            f"Kafka broker at {bootstrap} is unreachable (no TCP connection within "
            f"{timeout:g}s): check the address (--bootstrap / FRAUD_BOOTSTRAP_SERVERS) and "
            "that the broker runs"
        )
    errors: list[KafkaError] = []
    conf = {
        **settings.kafka_common(),
        "socket.connection.setup.timeout.ms": 2000,
        "logger": ProbeLogger(),
        "error_cb": errors.append,
    }
    client = _make(AdminClient, conf)
    deadline = time.monotonic() + max(timeout, 3.0)
    while True:
        try:
            client.list_topics(timeout=1.0)
            return
        except KafkaException:
            pass
        client.poll(0)  # serves error_cb
        auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if auth:
            reason = auth[-1].str().split(": ", 1)[-1]
            who = f"{settings.sasl_mechanism} as user {settings.sasl_username!r}"
            raise BrokerError(
                f"Kafka broker at {bootstrap} refused authentication ({who}): {reason}; check "
                "FRAUD_SASL_MECHANISM, FRAUD_SASL_USERNAME, FRAUD_SASL_PASSWORD"
            )
        tls = [e for e in errors if e.code() == KafkaError._SSL]
        if tls:
            reason = " ".join(tls[-1].str().split(": ", 1)[-1].split())
            raise BrokerError(
                f"Kafka broker at {bootstrap}: the TLS handshake failed ({reason}); check "
                "FRAUD_SSL_CA_LOCATION (the CA, in PEM, that signed the broker's certificate)"
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    hint = (
        "the broker may require TLS or SASL: set FRAUD_SECURITY_PROTOCOL and the FRAUD_SASL_* "
        "credentials"
        if protocol == "PLAINTEXT"
        else f"check that its listener speaks {protocol} (FRAUD_SECURITY_PROTOCOL)"
        + (", FRAUD_SSL_CA_LOCATION" if protocol.endswith("SSL") else "")
        + (" and the FRAUD_SASL_* credentials" if protocol.startswith("SASL") else "")
    )
    raise BrokerError(
        f"Kafka broker at {bootstrap} accepts connections but did not answer a {protocol} "
        f"metadata request within {max(timeout, 3.0):g}s: {hint}"
    )


@contextlib.contextmanager
def broker_for(settings: Settings) -> Iterator[Settings]:
    """Yield settings pointing at a reachable broker; without one configured, start the kind
    ``settings.broker_kind`` names (the embedded Tansu, or Apache Kafka from the jars)."""
    if settings.bootstrap_servers:
        check_reachable(settings)
        yield settings
        return
    broker: contextlib.AbstractContextManager[Any]
    if settings.broker_kind == "kafka":
        from streams.kafka.apache import ApacheKafka

        broker = ApacheKafka()
    else:
        broker = EmbeddedBroker()
    with broker as started:
        yield settings.model_copy(update={"bootstrap_servers": started.bootstrap})
