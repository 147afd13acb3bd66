"""Where partitions really end, when a broker's listed end may be short.

The embedded broker (Tansu 0.6) answers ListOffsets for a partition's end with the first offset
of its last record batch plus one, not the offset after its last record (BROKER.md). A reader
that stops at the listed end misses the rest of that batch: faust's table recovery did, so a
restarted stage-2 worker lost the newest history of the cards written in the changelog's last
batches. ``true_ends`` reads each partition from the record before its listed end, which is in
its last batch, to the end-of-partition event a fetch reports, and returns one past the last
record found when that is higher than the listed end. On Apache Kafka the listed end is exact
and the answer is unchanged (one small fetch per partition).

A changelog written in Kafka transactions (stage 2's exactly-once mode) ends with a commit
marker, an offset no consumer ever receives, so faust waited for ever for the record before the
listed end. ``committed_only`` lowers each end to one past the partition's last committed
record (0 when it has none), read back from the listed end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams.kafka import clients
from streams.settings import Settings

log = logging.getLogger(__name__)

TP = tuple[str, int]


def true_ends(
    settings: Settings,
    listed: Mapping[TP, int],
    timeout_s: float = 10.0,
    committed_only: bool = False,
) -> dict[TP, int]:
    """``listed`` (partition -> listed end offset), each raised to one past the partition's last
    record where the broker listed less. A partition that reports no end within ``timeout_s``
    keeps what was found by then (never less than its listed end). With ``committed_only``,
    one past the last committed record instead (see the module)."""
    ends = dict(listed)
    probe = {tp: end for tp, end in listed.items() if end > 0}  # listed 0: empty
    if not probe:
        return ends
    consumer = clients.reader(settings, f"{settings.stage2_app_id}-partition-end")
    if committed_only:
        try:
            for tp, end in probe.items():
                ends[tp] = _after_last_record(consumer, tp, end, timeout_s)
        finally:
            consumer.close()
        _log_changes(listed, ends)
        return ends
    try:
        consumer.assign([TopicPartition(t, p, end - 1) for (t, p), end in probe.items()])
        pending = set(probe)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                tp = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(tp)
                    continue
                ends[tp] = max(ends[tp], (msg.offset() or 0) + 1)
        if pending:
            log.warning("no end reported within %.0fs for %s", timeout_s, sorted(pending))
    finally:
        consumer.close()
    _log_changes(listed, ends)
    return ends


TAIL = 1_000


def _after_last_record(consumer: Any, tp: TP, end: int, timeout_s: float) -> int:
    """One past the last record a read_committed ``consumer`` receives from partition ``tp``
    before ``end``, reading back ``TAIL``, then 16 times as far, ... to the log start; 0 when
    there is none."""
    low, _ = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s)
    span = TAIL
    while True:
        start = max(low, end - span)
        consumer.assign([TopicPartition(*tp, start)])
        last = -1
        deadline = time.monotonic() + timeout_s
        done = False
        while not done and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    done = done or err.code() == KafkaError._PARTITION_EOF
                    continue
                if (msg.offset() or 0) < end:
                    last = max(last, msg.offset() or 0)
        if last >= 0 or start <= low:
            return last + 1
        span *= 16


def _log_changes(listed: Mapping[TP, int], ends: Mapping[TP, int]) -> None:
    for tp, end in sorted(ends.items()):
        if end != listed[tp]:
            log.info(
                "%s[%d]: the broker listed its end at %d, its records run to %d",
                *tp,
                listed[tp],
                end,
            )
