"""The worker's three Kafka clients and their settings.

* producer: outputs and dead letters; idempotent, no local message timeout (outputs wait for the
  broker however long an outage lasts) or transactional (``--exactly-once``). Delivery reports
  only for failures: a flush that returns with nothing outstanding means every output was
  acknowledged, and a failure reaches ``on_failure`` during that flush.
* consumer: the transactions topic in the worker's group, offsets stored by the worker.
* labels: every partition of the labels topic from the beginning, no group.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streams.kafka import clients
from streams.settings import Settings

AUTO_COMMIT_MS = 1000
"""Stored offsets reach the broker within a second: less to redo after a crash."""


def transactional_id(settings: Settings) -> str:
    """Stable per host, so a restarted worker fences its predecessor (override per worker with
    ``FRAUD_TRANSACTIONAL_ID`` when several run on one host)."""
    explicit = getattr(settings, "transactional_id", None) or os.environ.get(
        "FRAUD_TRANSACTIONAL_ID"
    )
    return str(explicit or f"{settings.stage1_group}-{socket.gethostname()}")


def producer(
    settings: Settings,
    error_cb: Callable[[KafkaError], None],
    on_failure: Callable[[KafkaError | None, Any], None],
) -> Producer:
    conf: dict[str, Any] = {
        "error_cb": error_cb,
        "on_delivery": on_failure,
        "delivery.report.only.error": True,
    }
    if settings.exactly_once:
        conf["transactional.id"] = transactional_id(settings)
        conf["transaction.timeout.ms"] = 60_000
    else:
        conf["message.timeout.ms"] = 0  # outputs wait for the broker, however long
    return clients.producer(settings, **conf)


def consumer(settings: Settings, error_cb: Callable[[KafkaError], None]) -> Consumer:
    conf: dict[str, Any] = {"error_cb": error_cb, "isolation.level": "read_committed"}
    if settings.exactly_once:
        conf["enable.auto.commit"] = False
    else:
        conf["auto.commit.interval.ms"] = AUTO_COMMIT_MS
    return clients.consumer(settings, settings.stage1_group, **conf)


@dataclass
class LabelsConsumer:
    consumer: Consumer
    partitions: list[int]
    # where each partition was assigned from (default: every one from its beginning)
    start: dict[int, int] = field(default_factory=dict)


def labels_consumer(settings: Settings, start: dict[int, int] | None = None) -> LabelsConsumer:
    """Every worker needs every terminal: the labels table reads all partitions, no group,
    from the beginning or from ``start`` (a checkpoint's labels offsets)."""
    s = settings
    labels = clients.consumer(
        s,
        f"{s.stage1_group}-labels",
        **{"enable.auto.commit": False, "fetch.wait.max.ms": s.labels_fetch_wait_ms},
    )
    meta = labels.list_topics(s.topic_labels, timeout=10).topics.get(s.topic_labels)
    parts = sorted(meta.partitions) if meta and not meta.error else []
    offsets = {p: (start or {}).get(p, OFFSET_BEGINNING) for p in parts}
    labels.assign([TopicPartition(s.topic_labels, p, o) for p, o in offsets.items()])
    return LabelsConsumer(labels, parts, offsets)
