"""Where a stage-2 record goes when it cannot be decided: the retry topics or the dead-letter topic.

A transient failure (the scoring call raised) sends the record to ``<flagged>.retry.N`` with a
due time that doubles per attempt (``RETRY_BASE_S``, 2x, 4x ...), keeping its event time and its
flagged-topic source position in ``retry.*`` headers; after ``stage2_max_attempts`` it goes to
the dead-letter topic. A record that cannot be decoded or scored at all goes there at once. The
dead letter carries the record's bytes, its original headers, and ``dlq.*`` headers saying where
it came from (the flagged-topic position, also for a retried record), why, and how often it
failed.
"""

from __future__ import annotations

import time
from typing import Any

from streams.kafka.dlq import PREFIX
from streams.observability import metrics
from streams.settings import Settings
from streams.stage2.exactly_once import TransactionalOutput
from streams.stage2.output import ANY_PARTITION
from streams.stage2.pipeline import header
from streams.stage2.stats import Stage2Stats

RETRY_BASE_S = 1.0
_RETRY_SOURCE = ("retry.source.partition", "retry.source.offset", "retry.source.timestamp")


def carried_headers(event: Any) -> list[tuple[str, bytes]]:
    """A record's headers as (name, bytes) pairs."""
    raw = event.message.headers or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def flagged_source(event: Any) -> tuple[str, str, str]:
    """(partition, offset, timestamp ms) of the record on the flagged topic, also when ``event``
    comes from a retry topic."""
    msg = event.message
    values = [header(event, name) for name in _RETRY_SOURCE]
    if all(v is not None for v in values):
        return str(values[0]), str(values[1]), str(values[2])
    return str(msg.partition), str(msg.offset), str(int(msg.timestamp * 1000))


class Failures:
    """Sends failed records of the stage-2 app to its retry topics and dead-letter topic (faust
    topics of that app); counts them in ``stats`` and the metrics."""

    def __init__(
        self,
        settings: Settings,
        retries: list[Any],
        dlq: Any,
        stats: Stage2Stats,
        transactional: TransactionalOutput | None = None,
    ):
        self.settings = settings
        self.retries = retries
        self.dlq = dlq
        self.stats = stats
        # exactly-once: failed records join their source partition's transaction
        self.transactional = transactional

    async def _send(
        self,
        event: Any,
        topic: Any,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
        timestamp_s: float | None = None,
    ) -> None:
        msg = event.message
        if self.transactional is None:
            await topic.send(
                key=msg.key,
                value=msg.value,
                headers=headers,
                partition=partition,
                timestamp=timestamp_s,
            )
            return
        await self.transactional.send(
            topic.get_topic_name(),
            msg.key,
            msg.value,
            headers,
            ANY_PARTITION if partition is None else partition,
            msg.topic,
            msg.partition,
            timestamp_s,
        )

    async def dead_letter(self, event: Any, kind: str, message: str) -> None:
        headers = [
            h
            for h in carried_headers(event)
            if not h[0].startswith(PREFIX) and not h[0].startswith("retry.")
        ]
        attempts = int(header(event, "retry.attempt") or "0") + 1
        now = str(int(time.time() * 1000)).encode()
        partition, offset, timestamp = flagged_source(event)
        headers += [
            (PREFIX + k, v)
            for k, v in {
                "source.topic": self.settings.topic_flagged.encode(),
                "source.partition": partition.encode(),
                "source.offset": offset.encode(),
                "source.timestamp": timestamp.encode(),
                "stage": metrics.STAGE2.encode(),
                "error.kind": kind.encode(),
                "error.message": message[:1000].encode(),
                "attempts": str(attempts).encode(),
                "first.failure.ms": (header(event, "retry.first.ms") or now.decode()).encode(),
                "last.failure.ms": now,
            }.items()
        ]
        await self._send(event, self.dlq, headers)
        self.stats.dead_letters += 1
        metrics.record_dead_letter(metrics.STAGE2, kind)

    async def retry_or_dead(self, event: Any, attempt: int, error: str) -> None:
        """Send ``event`` to retry topic ``attempt``, or to the dead-letter topic when that is
        past the last attempt."""
        if attempt >= self.settings.stage2_max_attempts:
            await self.dead_letter(event, "transient", error)
            return
        now = int(time.time() * 1000)
        headers = [h for h in carried_headers(event) if not h[0].startswith("retry.")]
        first = header(event, "retry.first.ms") or str(now)
        partition, offset, timestamp = flagged_source(event)
        headers += [
            ("retry.attempt", str(attempt).encode()),
            ("retry.first.ms", first.encode()),
            ("retry.at.ms", str(now + int(RETRY_BASE_S * 1000 * 2 ** (attempt - 1))).encode()),
            ("retry.source.partition", partition.encode()),
            ("retry.source.offset", offset.encode()),
            ("retry.source.timestamp", timestamp.encode()),
        ]
        # to the flagged partition's number: a retried record's outputs then join the same
        # partition's transaction in exactly-once mode (all these topics have as many partitions)
        await self._send(
            event,
            self.retries[attempt - 1],
            headers,
            partition=int(partition),
            timestamp_s=int(timestamp) / 1000,  # event time, as on the flagged topic
        )
        self.stats.retried += 1
        metrics.record_retry(metrics.STAGE2, "transient")
