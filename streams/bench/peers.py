"""The reference points: the least a Kafka consumer in Python can do with each transaction.

Both peers read the same backlog as stage 1, decode every JSON value, forward every tenth record
unchanged and store their offsets:

- ``confluent``: a plain confluent-kafka loop with the stage-1 worker's client settings and its
  delivery guarantee (batches of ``stage1_batch_size``; outputs flushed before the batch's offsets
  are stored);
- ``faust``: a faust-streaming agent on the aiokafka (``kafka://``) driver,
  ``broker_session_timeout=6`` and ``broker_heartbeat_interval=1``, acking each event (faust
  commits acked offsets on its own schedule). It keeps faust's own drain loop; stage 2's
  consumer hands records to its stream without faust's per-record tasks
  (``streams.kafka.faust_drain``), and its ratio to this peer includes that.
"""

from __future__ import annotations

import queue
import time
from typing import Any

import orjson

from streams.bench.backlog import SPAWN, BenchError, Rate, Sample, measured_rate, stop_children
from streams.settings import Settings

FORWARD_EVERY = 10
SAMPLE_EVERY = 500  # the faust agent records one progress sample per this many events


def _confluent_child(
    settings: Settings, group: str, forward: str, total: int, results: Any
) -> None:
    from confluent_kafka import TopicPartition

    from streams.kafka import clients

    consumer = clients.consumer(settings, group)
    producer = clients.producer(settings)
    consumer.subscribe([settings.topic_transactions])
    size, wait = settings.stage1_batch_size, settings.stage1_batch_wait_ms / 1000
    produce, loads = producer.produce, orjson.loads
    samples: list[Sample] = []
    done = seen = 0
    try:
        while done < total:
            msgs = consumer.consume(num_messages=size, timeout=wait)
            last: dict[tuple[str, int], int] = {}
            n = 0
            for msg in msgs:
                if msg.error():
                    continue
                value = msg.value() or b""
                loads(value)
                if seen % FORWARD_EVERY == 0:
                    produce(forward, value, msg.key())
                seen += 1
                n += 1
                last[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
            if not n:
                continue
            producer.flush(30)  # outputs delivered before the offsets that produced them
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            )
            samples.append((time.monotonic(), n))
            done += n
    finally:
        consumer.close()
    results.put(samples)


def _faust_child(settings: Settings, app_id: str, forward: str, total: int, results: Any) -> None:
    import os

    import faust

    devnull = os.open(os.devnull, os.O_WRONLY)  # faust's worker draws on the terminal
    os.dup2(devnull, 1)

    from streams.kafka.faust_config import data_dir, faust_broker_settings

    broker = {
        **faust_broker_settings(settings),
        "broker_session_timeout": 6,
        "broker_heartbeat_interval": 1,
    }
    app = faust.App(
        app_id,
        store="memory://",
        datadir=str(data_dir(app_id)),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        **broker,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    source = app.topic(settings.topic_transactions, **raw)
    out = app.topic(forward, **raw)
    samples: list[Sample] = []
    loads = orjson.loads

    @app.agent(source, concurrency=1)
    async def passthrough(stream: Any) -> None:
        seen = sampled = 0
        async for event in stream.events():
            loads(event.value)
            if seen % FORWARD_EVERY == 0:
                await out.send(key=event.key, value=event.value)
            seen += 1
            if seen % SAMPLE_EVERY == 0 or seen == total:
                samples.append((time.monotonic(), seen - sampled))
                sampled = seen
                if seen == total:
                    results.put(samples)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    worker.execute_from_commandline()


def _run(target: Any, args: tuple[Any, ...], timeout_s: float) -> list[Sample]:
    results = SPAWN.Queue()
    proc = SPAWN.Process(target=target, args=(*args, results), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                samples: list[Sample] = results.get(timeout=1.0)
                return samples
            except queue.Empty:
                if not proc.is_alive():
                    raise BenchError(f"peer exited with code {proc.exitcode}") from None
                if time.monotonic() > deadline:
                    raise BenchError(f"peer did not finish within {timeout_s:.0f}s") from None
    finally:
        if proc.is_alive():
            proc.terminate()  # faust runs until stopped; SIGTERM stops it cleanly
        stop_children([proc], timeout_s=20)


def confluent_passthrough(settings: Settings, forward: str, total: int, warmup: int) -> Rate:
    samples = _run(
        _confluent_child, (settings, f"{settings.stage1_group}.confluent", forward, total), 600
    )
    return measured_rate(samples, warmup)


def faust_passthrough(settings: Settings, forward: str, total: int, warmup: int) -> Rate:
    samples = _run(
        _faust_child,
        (settings, f"{settings.stage2_app_id}.faust-peer", forward, total),
        max(300.0, total / 500),
    )
    return measured_rate(samples, warmup)
