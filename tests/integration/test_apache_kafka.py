"""A 3-node Apache Kafka cluster loses nothing when the leader of most partitions dies.

Replication factor 3, ``min.insync.replicas=2``, an idempotent ``acks=all`` producer and a
consumer group keep running while the node leading most partitions is SIGKILLed and later
restarted: every record sent is acknowledged, read by the group, and in the log exactly once.
Only Apache Kafka replicates; elsewhere the test skips with the reason.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.kafka.apache_jars import java_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
PER_PHASE = 3000


class GroupReader(threading.Thread):
    """A consumer-group member collecting every value it reads until stopped."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"failover-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        )
        self.consumer.subscribe([topic])
        self.values: set[bytes] = set()
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                for msg in self.consumer.consume(1000, timeout=0.2):
                    if msg.error():
                        self.errors.append(msg.error().str())
                    else:
                        self.values.add(msg.value())
        finally:
            self.consumer.close()


def produce(producer: Producer, topic: str, phase: int, failed: list[str]) -> float:
    """Send one phase's records; the seconds until the broker acknowledged them all."""

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(err.str())

    started = time.monotonic()
    for i in range(PER_PHASE):
        value = f"{phase}-{i}".encode()
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode(), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 100 == 0:
            producer.poll(0)
            time.sleep(0.01)  # a steady stream, so that some records meet the failover
    assert producer.flush(120) == 0, "records unacknowledged after 120 s"
    return time.monotonic() - started


def log_contents(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit"})
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: list[bytes] = []
    deadline = time.monotonic() + 60
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        msgs = [m for m in reader.consume(5000, timeout=0.5) if not m.error()]
        out += [m.value() for m in msgs]
        if msgs:
            idle_since = time.monotonic()
        elif len(out) >= expected and time.monotonic() - idle_since > 2:
            break
    reader.close()
    return out


def test_killing_the_leader_of_most_partitions_loses_nothing() -> None:
    if not java_available():
        pytest.skip("Apache Kafka needs Java 17+: replication and failover exist only there")
    from streams.kafka.apache import ApacheKafka

    topic = f"failover-{uuid.uuid4().hex[:6]}"
    with ApacheKafka(nodes=3) as kafka:
        admin = kafka.admin()
        new = NewTopic(topic, PARTITIONS, 3, config={"min.insync.replicas": "2"})
        admin.create_topics([new])[topic].result(30)
        producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        failed: list[str] = []
        reader = GroupReader(kafka.bootstrap, topic)
        reader.start()
        try:
            produce(producer, topic, 1, failed)
            leaders = kafka.leader_counts(topic)
            victim = max((n for n in leaders if n >= 0), key=lambda n: leaders[n])
            assert leaders[victim] >= PARTITIONS // 3
            kafka.kill_node(victim)
            assert kafka.node_pids[victim] is None
            during = produce(producer, topic, 2, failed)
            after_kill = kafka.leader_counts(topic)
            assert victim not in after_kill and -1 not in after_kill, after_kill
            kafka.start_node(victim)
            produce(producer, topic, 3, failed)
        finally:
            deadline = time.monotonic() + 90
            while len(reader.values) < 3 * PER_PHASE and time.monotonic() < deadline:
                time.sleep(0.2)
            reader.halt.set()
            reader.join(30)
        assert failed == []
        sent = {f"{phase}-{i}".encode() for phase in (1, 2, 3) for i in range(PER_PHASE)}
        assert sent - reader.values == set(), f"{len(sent - reader.values)} records never read"
        in_log = log_contents(kafka.bootstrap, topic, len(sent))
        assert len(in_log) == len(sent) and set(in_log) == sent  # none lost, none doubled
        print(f"node {victim} killed (led {leaders[victim]}/{PARTITIONS}); phase during the "
              f"failover acknowledged in {during:.1f}s")  # fmt: skip
