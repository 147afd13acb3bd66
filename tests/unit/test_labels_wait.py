"""``LabelFeed.await_time``: a batch waits for the labels published up to its time, not for an
idle labels partition, and never longer than ``labels_wait_ms`` (a fake consumer at the seam)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.rules.loader import load_rules
from streams.settings import Settings
from streams.stage1.connect import LabelsConsumer
from streams.stage1.labels import LabelFeed
from streams.stage1.state import PartitionedScreener
from streams.stage1.stats import Stage1Stats
from tests.support import REPO

DAY = 86_400_000


@dataclass
class _Msg:
    part: int
    ts: int
    tid: str

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self.part

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def value(self) -> bytes:
        return orjson.dumps(
            {
                "transaction_id": self.tid,
                "terminal_id": "t",
                "timestamp": "2018-04-01T00:00:00",
                "fraud": 0,
            }
        )

    def topic(self) -> str:
        return "labels"

    def offset(self) -> int:
        return 0


@dataclass
class _Consumer:
    """Hands out ``pending`` messages whose release time (monotonic) has come."""

    pending: list[tuple[float, _Msg]] = field(default_factory=list)
    high: dict[int, int] = field(default_factory=dict)
    read: dict[int, int] = field(default_factory=dict)

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[_Msg]:
        if timeout:
            time.sleep(timeout)
        now = time.monotonic()
        out = [m for at, m in self.pending if at <= now][:num_messages]
        self.pending = [(at, m) for at, m in self.pending if m not in out]
        for m in out:
            self.read[m.part] = self.read.get(m.part, 0) + 1
        return out

    def poll(self, timeout: float = 0) -> _Msg | None:
        """The first message released within ``timeout`` (confluent-kafka's ``poll``)."""
        deadline = time.monotonic() + timeout
        while not (out := self.consume(1)) and time.monotonic() < deadline:
            time.sleep(0.001)
        return out[0] if out else None

    def position(self, tps: list[Any]) -> list[Any]:
        return [type("TP", (), {"offset": self.read.get(tp.partition, 0)})() for tp in tps]

    def get_watermark_offsets(self, tp: Any, *args: Any, **kw: Any) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, 0)

    def close(self) -> None:
        pass


def _feed(consumer: _Consumer, **overrides: Any) -> LabelFeed:
    settings = Settings(rules_dir=REPO / "rules", **overrides)
    state = PartitionedScreener(settings, load_rules(settings.rules_dir))
    return LabelFeed(settings, LabelsConsumer(consumer, [0, 1]), state, Stage1Stats(), None)


def test_waits_for_a_label_published_after_the_batch_on_every_partition() -> None:
    soon = time.monotonic() + 0.05
    consumer = _Consumer(
        pending=[
            (0, _Msg(0, 10 * DAY, "a")),
            (soon, _Msg(1, 9 * DAY, "b")),
            (soon + 0.05, _Msg(1, 11 * DAY, "c")),
        ],
        high={0: 1, 1: 2},
    )
    feed = _feed(consumer)
    feed.await_time(10 * DAY - 1, lambda: False)
    # partition 1 was flowing: the batch waited for its label published after the batch
    assert feed.stats.labels == 3 and feed.stats.label_wait_timeouts == 0
    assert len(feed.state.gate) == 3


def test_an_idle_partition_at_its_end_is_not_waited_for() -> None:
    consumer = _Consumer(pending=[(0, _Msg(0, 20 * DAY, "a"))], high={0: 1, 1: 0})
    feed = _feed(consumer)
    started = time.monotonic()
    feed.await_time(10 * DAY, lambda: False)
    assert time.monotonic() - started < 0.5 and feed.stats.label_wait_timeouts == 0


def test_a_flowing_partition_is_waited_for_at_most_labels_wait_ms() -> None:
    consumer = _Consumer(
        pending=[(0, _Msg(0, 20 * DAY, "a")), (0, _Msg(1, 5 * DAY, "b"))], high={0: 1, 1: 1}
    )
    feed = _feed(consumer, labels_wait_ms=200)
    started = time.monotonic()
    feed.await_time(10 * DAY, lambda: False)  # partition 1 just brought a label: flowing
    waited = time.monotonic() - started
    assert 0.15 < waited < 2.0 and feed.stats.label_wait_timeouts == 1


def test_labels_on_the_broker_not_fetched_yet_are_waited_for_beyond_labels_wait_ms() -> None:
    """A consumer just assigned (a restore from a checkpoint) has not fetched yet: the broker's
    end says labels remain, so the batch reads them instead of giving up after 0.1 s."""
    started = time.monotonic()  # before the feed is built: that may take 0.2 s on a busy machine
    later = started + 0.4  # the second partition's first fetch
    consumer = _Consumer(
        pending=[(0, _Msg(0, 20 * DAY, "a")), (later, _Msg(1, 11 * DAY, "b"))],
        high={0: 1, 1: 1},
    )
    feed = _feed(consumer, labels_wait_ms=100)
    feed.await_time(10 * DAY, lambda: False)
    assert time.monotonic() >= later  # waited for the fetch, four times labels_wait_ms
    assert feed.stats.labels == 2 and feed.stats.label_wait_timeouts == 0


@dataclass
class _EmptyTopicConsumer(_Consumer):
    """Labels partitions with nothing in them: position stays unset (-1001) however often they
    are fetched; ``fetched`` says whether the cached watermarks are known (the consumer has
    fetched them), and every watermark request that goes to the broker is counted."""

    fetched: bool = True
    asked: int = 0

    def position(self, tps: list[Any]) -> list[Any]:
        return [type("TP", (), {"offset": -1001})() for _ in tps]

    def get_watermark_offsets(self, tp: Any, *args: Any, **kw: Any) -> tuple[int, int]:
        if kw.get("cached"):
            return (0, 0) if self.fetched else (-1001, -1001)
        self.asked += 1
        return 0, 0


def test_an_empty_labels_topic_costs_a_batch_no_broker_round_trip() -> None:
    """Each request is a broker round trip of tens of ms; asked before every batch for every
    empty partition, it held every batch up that long (stage-1 latency ~250 ms at 1,000 tx/s)."""
    consumer = _EmptyTopicConsumer()
    feed = _feed(consumer)
    for i in range(20):
        feed.await_time(10 * DAY + i, lambda: False)
    assert consumer.asked == 0 and feed.stats.label_wait_timeouts == 0


def test_partitions_not_fetched_yet_are_asked_of_the_broker_at_most_every_half_second() -> None:
    consumer = _EmptyTopicConsumer(fetched=False)
    feed = _feed(consumer)
    started = time.monotonic()
    for i in range(20):
        feed.await_time(10 * DAY + i, lambda: False)
    assert time.monotonic() - started < 0.5  # so each partition's answer still served
    assert consumer.asked == 2  # once per partition, not once per batch
