"""Stage-2 batches in flight: what ``begin`` hands to ``finish``.

The agent keeps up to ``IN_FLIGHT`` batches in flight: while batch N is scored in the scoring
thread and batch N-1's outputs travel to the broker, faust takes and decodes batch N+1. A batch
publishes (table, changelog, decisions) only after the batch before it has, so everything
downstream sees batches in order. Each batch's events hold one extra reference
(``Message.incref``) from ``begin`` until ``finish`` has seen its outputs delivered, so faust
cannot commit an offset whose decision is not on the broker yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.stage2.scoring import Predicted, Prepared

IN_FLIGHT = 3


@dataclass
class Job:
    """A batch between ``begin`` and ``finish``."""

    events: list[Any]
    attempt: int
    started: float
    published: asyncio.Future[None]  # done once its outputs are handed to the producer
    records: list[dict[str, Any]] = field(default_factory=list)
    good: list[Any] = field(default_factory=list)  # the events whose records decoded
    batch: Prepared | None = None
    predicted: asyncio.Future[Predicted] | None = None
    decided: list[dict[str, Any]] | None = None  # None: nothing to publish (sent to retry)


def header(event: Any, name: str) -> str | None:
    """One header of a record, decoded, without copying all its headers."""
    raw = event.message.headers
    if not raw:
        return None
    for key, value in raw.items() if isinstance(raw, dict) else raw:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def sent_ms(event: Any) -> int | None:
    """The ``sent_ms`` header of a record (the producer's send time)."""
    text = header(event, "sent_ms")
    return int(text) if text else None


def source_partition(event: Any) -> int:
    """The record's flagged-topic partition: its own, or for a retried record the one its
    ``retry.source.partition`` header carries."""
    original = header(event, "retry.source.partition")
    return int(original) if original is not None else int(event.message.partition)


def decode_flagged(event: Any) -> dict[str, Any]:
    """The flagged record of an event, with its ``sent_ms`` header in it; ValueError
    (``orjson.JSONDecodeError`` included) when it is not one."""
    record = orjson.loads(event.message.value)
    if not isinstance(record, dict) or "features" not in record:
        raise ValueError("not a flagged record")
    sent = sent_ms(event)
    if sent is not None:
        record["sent_ms"] = sent
    return record
