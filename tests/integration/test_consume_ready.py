"""``clients.consume_ready`` on a real broker: what is ready comes at once, not when a batch
fills or the wait ends (``Consumer.consume(n, timeout)`` waits for one or the other)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.kafka import clients
from streams.kafka.topics import create_topics

pytestmark = pytest.mark.integration

WAIT_S = 60.0  # far longer than a fetch takes: a call that waits for it is plain to see


def _reader(settings, topic):
    consumer = clients.consumer(settings, f"{settings.stage1_group}.ready-test")
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


def test_ready_records_come_without_waiting_for_a_full_batch(settings):
    create_topics(settings)
    topic = settings.topic_transactions
    consumer = _reader(settings, topic)
    try:
        assert clients.consume_ready(consumer, 1000, 0.2) == []  # nothing there: the wait ends
        producer = clients.producer(settings)
        for i in range(3):
            producer.produce(topic, f"r{i}".encode(), b"k", partition=0)
        assert producer.flush(10) == 0

        started = time.monotonic()
        got = clients.consume_ready(consumer, 1000, WAIT_S)
        assert got, "no record within the wait"
        assert time.monotonic() - started < WAIT_S / 2, "waited for the batch to fill"
        while len(got) < 3:
            more = clients.consume_ready(consumer, 1000, WAIT_S)
            assert more, "a produced record did not come"
            got += more
        assert [m.value() for m in got] == [b"r0", b"r1", b"r2"]
        assert all(m.error() is None for m in got)

        producer.produce(topic, b"r3", b"k", partition=0)
        producer.produce(topic, b"r4", b"k", partition=0)
        assert producer.flush(10) == 0
        one = clients.consume_ready(consumer, 1, WAIT_S)  # at most max_messages
        assert [m.value() for m in one] == [b"r3"]
        assert [m.value() for m in clients.consume_ready(consumer, 1, WAIT_S)] == [b"r4"]
    finally:
        consumer.close()
