"""The checkpoint topic: one partition per source partition (co-partitioned), compacted.

A checkpoint of partition p by the stage-1 group g is written as chunk records (at most
``CHUNK_BYTES`` each, keyed ``g/p/slot/i``) followed by a manifest record (keyed ``g/p``: JSON
with the checkpoint's id, slot, chunk count, source offset, byte sizes and CRC). The group in
the key keeps two groups that screen the same topic (a shadow rule set, say) from restoring
each other's state. Consecutive checkpoints alternate between two
slots, so compaction (which keeps the latest record per key) never replaces a chunk of the latest
complete checkpoint with one of a checkpoint whose writer died half way. A reader scans the
partition backwards from its end, in growing windows, for the latest manifest whose chunks are
all there; compaction keeps that read short whatever the topic's age.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from streams.errors import StateError, TopicError
from streams.kafka import clients
from streams.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024  # under every broker's default maximum message size (1 MB)
MANIFEST_FORMAT = 1
FIRST_WINDOW = 64  # records: the first backward read of a partition


@dataclass
class Checkpoint:
    """A complete checkpoint of one partition, as read back."""

    partition: int
    id: int
    offset: int  # the next source offset it has not screened
    labels: bytes  # ``streams.checkpoint.stage1.save_labels``
    state: bytes  # ``save_partition``
    round: str  # checkpoints of one worker round share their labels state

    @property
    def size(self) -> int:
        return len(self.labels) + len(self.state)


def records(
    group: str,
    partition: int,
    checkpoint_id: int,
    offset: int,
    round_id: str,
    labels: bytes,
    state: bytes,
) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of a checkpoint, in the order they must be written."""
    payload = labels + state
    slot = checkpoint_id % 2
    chunks = [payload[i : i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]
    out = [
        (f"{group}/{partition}/{slot}/{i}".encode(), checkpoint_id.to_bytes(8, "big") + chunk)
        for i, chunk in enumerate(chunks)
    ]
    manifest = {
        "format": MANIFEST_FORMAT,
        "id": checkpoint_id,
        "slot": slot,
        "chunks": len(chunks),
        "offset": offset,
        "round": round_id,
        "sizes": [len(labels), len(state)],
        "crc": zlib.crc32(payload),
    }
    out.append((f"{group}/{partition}".encode(), orjson.dumps(manifest)))
    return out


def assemble(
    group: str, partition: int, latest: dict[bytes, bytes]
) -> tuple[Checkpoint | None, int]:
    """The checkpoint of ``group`` that ``latest`` (the last value read per key) holds
    complete, if any, and the id of its latest manifest seen (-1: none)."""
    raw = latest.get(f"{group}/{partition}".encode())
    if raw is None:
        return None, -1
    try:
        manifest = orjson.loads(raw)
        checkpoint_id, slot, n = manifest["id"], manifest["slot"], manifest["chunks"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise StateError(f"checkpoint manifest of partition {partition}: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise StateError(f"checkpoint manifest format {manifest.get('format')!r}")
    parts = []
    for i in range(n):
        value = latest.get(f"{group}/{partition}/{slot}/{i}".encode())
        if value is None or int.from_bytes(value[:8], "big") != checkpoint_id:
            return None, checkpoint_id
        parts.append(value[8:])
    payload = b"".join(parts)
    if zlib.crc32(payload) != manifest["crc"]:
        raise StateError(f"checkpoint {checkpoint_id} of partition {partition}: CRC mismatch")
    cut = manifest["sizes"][0]
    return (
        Checkpoint(
            partition,
            checkpoint_id,
            int(manifest["offset"]),
            payload[:cut],
            payload[cut:],
            str(manifest["round"]),
        ),
        checkpoint_id,
    )


def read_latest(
    settings: Settings, partitions: list[int], stopped: Callable[[], bool] = lambda: False
) -> tuple[dict[int, Checkpoint], dict[int, int]]:
    """The latest complete checkpoint of each partition that has one, and the latest
    manifest id seen per partition (the next checkpoint's id follows it)."""
    topic = settings.topic_checkpoints
    consumer = clients.consumer(
        settings,
        f"{settings.stage1_group}-checkpoints",
        **{
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 8 * CHUNK_BYTES,
        },
    )
    found: dict[int, Checkpoint] = {}
    ids: dict[int, int] = {}
    try:
        window = dict.fromkeys(partitions, FIRST_WINDOW)
        todo = list(partitions)
        while todo and not stopped():
            bounds = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in todo}
            starts = {p: max(low, high - window[p]) for p, (low, high) in bounds.items()}
            latest = _read(consumer, topic, starts, {p: high for p, (_, high) in bounds.items()})
            again = []
            for p in todo:
                try:
                    checkpoint, manifest_id = assemble(settings.stage1_group, p, latest.get(p, {}))
                except StateError as exc:  # this partition rebuilds; the others restore
                    log.warning("partition %d: checkpoint unusable (%s)", p, exc)
                    continue
                if manifest_id >= 0 and p not in ids:
                    ids[p] = manifest_id
                if checkpoint is not None:
                    found[p] = checkpoint
                elif starts[p] > bounds[p][0]:  # not at the beginning yet: look further back
                    window[p] *= 4
                    again.append(p)
            todo = again
    finally:
        consumer.close()
    return found, ids


def _read(
    consumer: Any, topic: str, starts: dict[int, int], ends: dict[int, int]
) -> dict[int, dict[bytes, bytes]]:
    """The last value per key of each partition's records in [start, end)."""
    pending = {p for p in starts if starts[p] < ends[p]}
    latest: dict[int, dict[bytes, bytes]] = {p: {} for p in starts}
    if not pending:
        return latest
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
    idle = 0
    while pending and idle < 100:
        msgs = consumer.consume(num_messages=1000, timeout=0.2)
        idle = 0 if msgs else idle + 1
        for msg in msgs:
            p = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(p)
                continue
            if p in pending and msg.key() is not None:
                # read to the partition's end event, not to the high watermark: a broker that
                # numbers offsets by batch (Tansu) reports a watermark below the last record
                latest[p][msg.key()] = msg.value() or b""
    consumer.unassign()
    if pending:
        raise StateError(f"checkpoint partitions {sorted(pending)} did not answer in 20 s")
    return latest


def ensure_topic(settings: Settings) -> bool:
    """Create the checkpoint topic when it is missing, with as many partitions as the
    transactions topic; False (logged: checkpoints off) when it cannot be used."""
    from streams.kafka.topics import create_topics

    meta = clients.admin(settings).list_topics(timeout=10).topics
    source, target = meta.get(settings.topic_transactions), meta.get(settings.topic_checkpoints)
    wanted = len(source.partitions) if source is not None and not source.error else None
    if target is None or target.error:
        try:
            create_topics(
                settings.model_copy(update={"partitions": wanted or settings.partitions}),
                [settings.topic_checkpoints],
            )
        except TopicError as exc:
            log.warning("checkpoints off: %s", exc)
            return False
        return True
    if wanted is not None and len(target.partitions) < wanted:
        log.warning(
            "checkpoints off: %s has %d partitions, %s has %d (they must be co-partitioned)",
            settings.topic_checkpoints,
            len(target.partitions),
            settings.topic_transactions,
            wanted,
        )
        return False
    return True
