"""Reading whole topics from the beginning, for replay, dead-letter inspection and redrive.

The end of a partition is where the broker says it is in a fetch (``enable.partition.eof``),
not the listed high watermark, which lags on the embedded broker (BROKER.md); an idle timeout
guards against a partition that never reports its end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from streams.errors import TopicError
from streams.kafka.clients import reader
from streams.settings import Settings


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise TopicError(f"topic {topic} does not exist (or has no partitions)")
    return sorted(meta.partitions)


def read_topic(
    settings: Settings,
    topic: str,
    idle_timeout_s: float = 10.0,
    batch: int = 5000,
    missing_ok: bool = False,
) -> Iterator[Message]:
    """Every message of ``topic``, all partitions from the beginning to their end (each
    partition in offset order; partitions interleaved)."""
    consumer = reader(settings)
    try:
        try:
            parts = partitions_of(consumer, topic)
        except TopicError:
            if missing_ok:
                return
            raise
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending = set(parts)
        last = time.monotonic()
        while pending and time.monotonic() - last < idle_timeout_s:
            msgs = consumer.consume(num_messages=batch, timeout=0.5)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                    continue
                pending.add(msg.partition() or 0)  # more arrived after an end
                last = time.monotonic()
                yield msg
    finally:
        consumer.close()
