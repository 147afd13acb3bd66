"""``fraudstream dlq redrive``: send dead letters back to their source topic, exactly once.

Each dead letter goes back to ``dlq.source.topic`` (to its original partition when the topic
still has it, with its original key, value, headers and record timestamp) plus a
``redrive.from: <dlq>/<partition>/<offset>`` header.

What was sent is recorded in ``<dlq>.redriven``: one marker per redriven dead letter, keyed
``<partition>:<offset>`` of the dead letter (a compacted-style topic: the latest marker per key
is all that matters). The sends and their markers are written in one Kafka transaction per chunk,
so either both are visible (``read_committed``) or neither; a redrive first reads the markers
and skips what they name, so running it again sends nothing twice. Per-letter markers, rather
than committed offsets of a consumer group, let a filtered redrive (one error kind, a time or
offset range) leave the other dead letters for later.

The transactional id is fixed per dead-letter topic (``fraudstream-redrive-<dlq>``): a redrive
that crashed mid-chunk has its open transaction aborted when the next one starts, and two
concurrent redrives of the same topic fence each other instead of both sending.

On the embedded broker (Tansu) an aborted transaction's records stay visible to
``read_committed`` readers: after a crash mid-chunk, that chunk's sends *and* markers are
visible, so the next redrive skips them and nothing is sent twice there either; on Kafka both are
hidden and the chunk is sent again.

A dead letter whose value was cut (``dlq.value.truncated``) cannot be restored and is skipped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message

from streams.errors import BrokerError
from streams.kafka import clients
from streams.kafka.dlq import PREFIX, header_dict, original_headers
from streams.kafka.topics import create_topics
from streams.recovery.reader import read_topic
from streams.settings import Settings

log = logging.getLogger(__name__)


def marker_topic(dlq: str) -> str:
    return f"{dlq}.redriven"


def marker_key(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


def redriven_offsets(settings: Settings, dlq: str) -> set[tuple[int, int]]:
    """(partition, offset) of every dead letter of ``dlq`` already redriven."""
    done: set[tuple[int, int]] = set()
    for msg in read_topic(settings, marker_topic(dlq), idle_timeout_s=5.0, missing_ok=True):
        key = (msg.key() or b"").decode("utf-8", "replace")
        partition, _, offset = key.partition(":")
        if partition.isdigit() and offset.isdigit():
            done.add((int(partition), int(offset)))
    return done


@dataclass(frozen=True)
class RedriveFilter:
    """Which dead letters to redrive; every set condition must hold. Times are the dead
    letter's last failure (epoch ms, ``since`` inclusive, ``until`` exclusive); offsets are the
    dead-letter topic's (inclusive), in ``partition`` when given."""

    kinds: frozenset[str] | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def matches(self, partition: int, offset: int, headers: dict[str, str], ts: int) -> bool:
        if self.kinds is not None and headers.get(PREFIX + "error.kind") not in self.kinds:
            return False
        failed_text = headers.get(PREFIX + "last.failure.ms", "")
        failed = int(failed_text) if failed_text.isdigit() else ts
        if self.since_ms is not None and failed < self.since_ms:
            return False
        if self.until_ms is not None and failed >= self.until_ms:
            return False
        if self.partition is not None and partition != self.partition:
            return False
        if self.from_offset is not None and offset < self.from_offset:
            return False
        return not (self.to_offset is not None and offset > self.to_offset)


@dataclass
class RedriveResult:
    dlq: str
    redrive_id: str
    dry_run: bool
    read: int = 0
    matched: int = 0
    sent: int = 0
    already_redriven: int = 0
    skipped_truncated: int = 0
    skipped_no_source: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["by_target"] = dict(self.by_target)
        out["by_kind"] = dict(self.by_kind)
        return out


@dataclass
class _Send:
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]]
    timestamp: int
    marker_key: str
    marker: bytes


class _Sender:
    """Transactional chunks: the redriven records and their markers, committed together."""

    def __init__(self, settings: Settings, dlq: str):
        self.markers = marker_topic(dlq)
        self.producer = clients.producer(
            settings,
            **{
                "transactional.id": f"fraudstream-redrive-{dlq}",
                "transaction.timeout.ms": 60_000,
            },
        )
        self.producer.init_transactions(30)
        self._errors: list[str] = []

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")

    def send(self, chunk: list[_Send]) -> None:
        p = self.producer
        p.begin_transaction()
        try:
            for s in chunk:
                kwargs: dict[str, Any] = {"headers": s.headers, "on_delivery": self._delivered}
                if s.partition is not None:
                    kwargs["partition"] = s.partition
                if s.timestamp > 0:
                    kwargs["timestamp"] = s.timestamp
                p.produce(s.topic, s.value, s.key, **kwargs)
                p.produce(self.markers, s.marker, s.marker_key.encode())
            p.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                p.abort_transaction(30)
            raise BrokerError(f"redrive chunk not committed: {err.str()}") from None
        if self._errors:
            raise BrokerError(f"redrive: delivery failed: {self._errors[:3]}")


def _header_list(msg: Message) -> list[tuple[str, Any]]:
    raw: Any = msg.headers() or []
    return list(raw.items() if isinstance(raw, dict) else raw)


def _partitions(settings: Settings, topic: str, cache: dict[str, int]) -> int:
    if topic not in cache:
        meta = clients.admin(settings).list_topics(topic, timeout=10).topics.get(topic)
        cache[topic] = len(meta.partitions) if meta and not meta.error else 0
    return cache[topic]


def redrive(
    settings: Settings,
    dlq: str,
    flt: RedriveFilter | None = None,
    dry_run: bool = False,
    chunk_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> RedriveResult:
    """Send the matching, not yet redriven dead letters of ``dlq`` back to their source."""
    flt = flt or RedriveFilter()
    result = RedriveResult(dlq=dlq, redrive_id=uuid.uuid4().hex[:12], dry_run=dry_run)
    if not dry_run:
        create_topics(settings, [marker_topic(dlq)])
    sender = None if dry_run else _Sender(settings, dlq)
    done = redriven_offsets(settings, dlq)
    cache: dict[str, int] = {}
    chunk: list[_Send] = []
    for msg in read_topic(settings, dlq, idle_timeout_s=5.0):
        result.read += 1
        if progress is not None:
            progress(1)
        letter = _prepare(settings, msg, flt, done, result, cache)
        if letter is None:
            continue
        result.matched += 1
        result.by_target[letter.topic] += 1
        if sender is not None:
            chunk.append(letter)
            if len(chunk) >= chunk_size:
                sender.send(chunk)
                result.sent += len(chunk)
                chunk = []
    if sender is not None and chunk:
        sender.send(chunk)
        result.sent += len(chunk)
    return result


def _prepare(
    settings: Settings,
    msg: Message,
    flt: RedriveFilter,
    done: set[tuple[int, int]],
    result: RedriveResult,
    cache: dict[str, int],
) -> _Send | None:
    partition, offset = msg.partition() or 0, msg.offset() or 0
    headers = header_dict(msg.headers())
    if not flt.matches(partition, offset, headers, msg.timestamp()[1]):
        return None
    if (partition, offset) in done:
        result.already_redriven += 1
        return None
    if PREFIX + "value.truncated" in headers:
        result.skipped_truncated += 1
        return None
    source = headers.get(PREFIX + "source.topic", "")
    count = _partitions(settings, source, cache) if source else 0
    if not count:
        result.skipped_no_source += 1
        return None
    src_partition = headers.get(PREFIX + "source.partition", "")
    target = int(src_partition) if src_partition.isdigit() else None
    if target is not None and target >= count:
        target = None
    src_ts = headers.get(PREFIX + "source.timestamp", "")
    kind = headers.get(PREFIX + "error.kind", "?")
    result.by_kind[kind] += 1
    origin = f"{result.dlq}/{partition}/{offset}"
    marker = {
        "dlq": result.dlq,
        "partition": partition,
        "offset": offset,
        "source_topic": source,
        "source_partition": target,
        "source_offset": headers.get(PREFIX + "source.offset"),
        "error_kind": kind,
        "redrive_id": result.redrive_id,
        "redriven_at_ms": int(time.time() * 1000),
    }
    return _Send(
        topic=source,
        partition=target,
        key=msg.key(),
        value=msg.value(),
        headers=[*original_headers(_header_list(msg)), ("redrive.from", origin.encode())],
        timestamp=int(src_ts) if src_ts.isdigit() else 0,
        marker_key=marker_key(partition, offset),
        marker=orjson.dumps(marker),
    )
