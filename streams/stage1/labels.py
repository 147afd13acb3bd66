"""The labels feed: delayed fraud labels from the labels topic into the shared state (terminal
label table, online classifier), through ``PartitionedScreener.learn_label``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from streams.checkpoint.position import LabelsPosition
from streams.errors import MessageError
from streams.features.names import DAY_MS
from streams.kafka.clients import consume_ready
from streams.logging_setup import where
from streams.observability import metrics
from streams.schema import parse_timestamp
from streams.settings import Settings
from streams.stage1.connect import LabelsConsumer
from streams.stage1.labelgate import Label
from streams.stage1.state import PartitionedScreener
from streams.stage1.stats import Stage1Stats
from streams.stage1.telemetry import Stage1Telemetry

log = logging.getLogger(__name__)

UNREAD_WAIT_S = 30.0  # the longest a batch waits for labels the broker holds and we have not read
AWAIT_CHUNK = 5000  # labels per read while a batch waits for its time (little overshoot)
ASK_EVERY_S = 0.5  # how long the broker's watermarks of a partition not fetched yet serve
READ_AHEAD_MS = DAY_MS
"""How far past the stream's event time the loop reads labels unasked: a worker catching up on
a backlog would otherwise read the labels topic far ahead and hold its labels in memory (and in
every checkpoint). ``await_time`` reads whatever a batch needs, however far."""


def decode_label(value: bytes | None) -> Label:
    """A label message to (transaction_id, terminal_id, ts_ms, fraud, card_id, amount); the
    last two are optional in the message ("" and 0 without them)."""
    try:
        obj = orjson.loads(value or b"")
        return (
            str(obj["transaction_id"]),
            str(obj["terminal_id"]),
            parse_timestamp(obj["timestamp"]),
            int(obj["fraud"]),
            str(obj.get("card_id") or ""),
            float(obj.get("amount") or 0.0),  # orjson refuses NaN and infinity
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"bad label: {exc}") from None


class LabelFeed:
    def __init__(
        self,
        settings: Settings,
        source: LabelsConsumer,
        state: PartitionedScreener,
        stats: Stage1Stats,
        telemetry: Stage1Telemetry | None,
    ):
        self.settings = settings
        self.consumer = source.consumer
        self.partitions = source.partitions
        self.start = {p: source.start.get(p, OFFSET_BEGINNING) for p in source.partitions}
        self.state = state
        self.stats = stats
        self.telemetry = telemetry
        self.time: dict[int, int] = {}  # last record timestamp read per label partition
        self.arrived: dict[int, float] = {}  # when a label last came, per partition (monotonic)
        # the broker's (when, low, high) of partitions not fetched yet (``_remaining``)
        self._asked: dict[int, tuple[float, int, int]] = {}

    def drain(self, limit: int = 50_000, timeout: float = 0) -> int:
        """Learn from the labels that have arrived (waiting up to ``timeout`` only when none
        has); returns how many."""
        msgs = consume_ready(self.consumer, limit, timeout)
        learn = self.state.learn_label
        before = self.state.learned
        n = 0
        for msg in msgs:
            if msg.error():
                continue
            try:
                label = decode_label(msg.value())
            except MessageError as exc:
                log.warning(
                    "bad label at %s: %s", where(msg.topic(), msg.partition(), msg.offset()), exc
                )
                continue
            known_at = msg.timestamp()[1]
            learn(*label, known_at_ms=known_at)
            partition = msg.partition() or 0
            self.time[partition] = known_at
            self.arrived[partition] = time.monotonic()
            n += 1
        self.stats.labels += n
        late = self.state.gate.late
        if late > self.stats.late_labels:
            log.warning(
                "%d labels arrived after the stream passed their publication time (applied at "
                "the next segment: decisions may differ from a replay)",
                late - self.stats.late_labels,
            )
            metrics.record_late_labels(late - self.stats.late_labels)
            self.stats.late_labels = late
        if self.telemetry is not None:
            self.telemetry.labels(n, self.state.learned - before)
        return n

    def wanted(self) -> bool:
        """Whether the loop should read the labels that arrived: the worker screens
        partitions and has not read labels beyond ``READ_AHEAD_MS`` past the latest of them."""
        latest = self.state.latest
        return bool(latest) and self.state.gate.watermark <= max(latest.values()) + READ_AHEAD_MS

    def await_time(self, upto_ms: int, stopped: Callable[[], bool]) -> None:
        """``labels_wait``: read the labels topic until every partition of it has shown a label
        published after ``upto_ms`` (labels are published in time order per partition, as
        ``fraudstream produce`` does, so none published by then can still come), so the batch
        sees every label known by then, wherever the labels consumer's fetches happen to be.

        A partition whose end (by the last fetch, or asked of the broker when this consumer has
        not fetched it yet) lies beyond what was read holds labels the batch may need: it is
        read, for up to ``UNREAD_WAIT_S`` (a consumer just assigned, e.g. after a restore from
        a checkpoint, needs a moment for its first fetch). A partition read to its end is
        waited for only while labels flow on it: once it has brought nothing for
        ``labels_idle_ms`` it is idle and the batch goes on, and a flowing one is waited for at
        most ``labels_wait_ms`` (a label that comes later is *late*: counted, logged, applied
        at the next segment)."""
        topic = self.settings.topic_labels
        idle_s = self.settings.labels_idle_ms / 1000
        started = time.monotonic()
        deadline = started + self.settings.labels_wait_ms / 1000
        while not stopped():
            behind = [p for p in self.partitions if self.time.get(p, -1) <= upto_ms]
            if not behind:
                return
            if self.drain(AWAIT_CHUNK, timeout=0):
                continue
            now = time.monotonic()
            unread = [p for p in behind if (self._remaining(topic, p) or 0) > 0]
            if unread:
                if now - started > UNREAD_WAIT_S:
                    log.warning(
                        "labels partitions %s still unread after %.0fs: going on without them",
                        unread,
                        UNREAD_WAIT_S,
                    )
                    self._timed_out()
                    return
            elif now > deadline:
                self._timed_out()
                return
            elif not [p for p in behind if now - self.arrived.get(p, -1e9) < idle_s]:
                return  # every partition behind is at its end and idle
            self.drain(AWAIT_CHUNK, timeout=0.002)

    def _timed_out(self) -> None:
        self.stats.label_wait_timeouts += 1
        metrics.record_label_wait_timeout()

    def _remaining(self, topic: str, partition: int) -> int | None:
        """Labels of the partition not read yet, by the high watermark the last fetch brought
        (no broker round trip: the consumer fetches every ``labels_fetch_wait_ms``, an empty
        partition too), or, while this consumer has not fetched the partition since its
        assignment, as the broker answered at most ``ASK_EVERY_S`` ago (a round trip costs
        tens of ms; asked before every batch, it held each one up that long). None when the
        broker cannot say (an outage)."""
        tp = TopicPartition(topic, partition)
        try:
            position = self.consumer.position([tp])[0].offset
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if low < 0 or high < 0:  # not fetched yet
                asked = self._asked.get(partition)
                now = time.monotonic()
                if asked is None or now - asked[0] > ASK_EVERY_S:
                    asked = (now, *self.consumer.get_watermark_offsets(tp, 1, False))
                    self._asked[partition] = asked
                _, low, high = asked
        except KafkaException as exc:
            log.debug("labels %s: end unknown (%s)", where(topic, partition, None), exc)
            return None
        if position < 0:  # nothing read since the assignment: it starts there
            position = max(self.start.get(partition, OFFSET_BEGINNING), low)
        return max(0, high - max(position, low))

    def position(self) -> LabelsPosition:
        """Where this feed resumes: per partition the next offset (every label before it has
        been offered to the state) and the publication time of the last label read."""
        topic = self.settings.topic_labels
        tps = [TopicPartition(topic, p) for p in self.partitions]
        offsets = {tp.partition: tp.offset for tp in self.consumer.position(tps)}
        return LabelsPosition(
            {p: o if o >= 0 else self.start[p] for p, o in offsets.items()}, dict(self.time)
        )

    def resume(self, position: LabelsPosition) -> None:
        """Continue from ``position`` (another feed's: the labels state it fed is taken over)."""
        topic = self.settings.topic_labels
        self.start = {p: position.offsets.get(p, OFFSET_BEGINNING) for p in self.partitions}
        self.consumer.assign([TopicPartition(topic, p, o) for p, o in self.start.items()])
        self.time = dict(position.times)
        self.arrived = {}

    def close(self) -> None:
        self.consumer.close()
