"""Dead letters of stage 1: a transaction that fails ``decode_transaction`` goes, byte for byte
with its headers and why it failed, to ``topic_dlq`` (``streams.kafka.dlq``)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from confluent_kafka import Message

from streams.errors import MessageError
from streams.kafka.dlq import PREFIX, dead_letter
from streams.logging_setup import where
from streams.observability.metrics import STAGE1
from streams.settings import Settings
from streams.stage1.stats import Stage1Stats
from streams.stage1.telemetry import Stage1Telemetry

log = logging.getLogger(__name__)
DLQ_VALUE_LIMIT = 512 * 1024
"""A dead letter's value is cut to this many bytes (headers ``dlq.value.truncated`` = original
size, ``dlq.value.sha256``), so it fits the default 1 MB ``message.max.bytes`` of a real broker."""


class DeadLetters:
    def __init__(
        self,
        settings: Settings,
        producer: Any,
        stats: Stage1Stats,
        telemetry: Stage1Telemetry | None,
    ):
        self.topic = settings.topic_dlq
        self.producer = producer
        self.stats = stats
        self.telemetry = telemetry

    def send(self, msg: Message, exc: MessageError) -> None:
        letter = dead_letter(msg, STAGE1, exc.kind, str(exc))
        value, headers = letter.value, letter.headers
        if value is not None and len(value) > DLQ_VALUE_LIMIT:
            headers = [
                *headers,
                (PREFIX + "value.truncated", str(len(value)).encode()),
                (PREFIX + "value.sha256", hashlib.sha256(value).hexdigest().encode()),
            ]
            value = value[:DLQ_VALUE_LIMIT]
        self.producer.produce(self.topic, value, letter.key, headers=headers)
        self.stats.dead_letters += 1
        if self.telemetry is not None:
            self.telemetry.dead_letter(exc.kind)
        log.warning(
            "dead letter %s: %s: %s",
            where(msg.topic(), msg.partition(), msg.offset()),
            exc.kind,
            exc,
        )
