"""``SafeCommitConsumer`` (``streams.kafka.faust_commit``) over a scripted stand-in for faust's
consumer: no record of a source partition reaches the stream from ahead of its committed offset
when the partition resumes after a table recovery, and the commit offset passes transaction
markers without passing an unprocessed record."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree

from streams.kafka.faust_commit import SafeCommitConsumer

FLAGGED = TP("flagged", 2)
CHANGELOG = TP("cards-changelog", 2)


class Record:
    """A fetched record as faust's ``ConsumerMessage`` (hashable, weakly referenced)."""

    def __init__(self, tp: TP, offset: int):
        self.tp, self.offset, self.acked = tp, offset, False


class ScriptedConsumer:
    """The parts of faust's consumer the mixin calls: a fetch position per partition, and
    ``getmany`` fetches (waiting for ``fetched``) the next records from the positions."""

    def __init__(self, log: dict[TP, int], position: dict[TP, int], committed: int | None):
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == FLAGGED.topic),
            consumer_generation_id=1,
        )
        self.log_end = log
        self.position = dict(position)
        self.active: set[TP] = {CHANGELOG}
        self._committed_offset: dict[TP, int | None] = {FLAGGED: committed}
        self._acked: dict[TP, list[int]] = {}
        self._acked_index: dict[TP, set[int]] = {}
        self._gap: dict[TP, Any] = defaultdict(IntervalTree)
        self._unacked_messages: set[Any] = set()
        self.broker_committed: dict[TP, int] = {}
        self.fetched = asyncio.Event()
        self.fetched.set()
        self.seeks: list[tuple[TP, int]] = []

    def ack(self, message: Any) -> bool:
        message.acked = True
        self._acked.setdefault(message.tp, []).append(message.offset)
        return True

    def assignment(self) -> set[TP]:
        return {FLAGGED, CHANGELOG}

    async def _committed_on_broker(self, tps: list[TP]) -> dict[TP, int | None]:
        return {tp: self.broker_committed.get(tp) for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    def resume_flow(self) -> None:
        pass

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        self.active.update(tps)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # like faust: the set of active partitions is read when the fetch starts, and the
        # records are handed over once they are fetched (the set may have grown meanwhile)
        active = self.active
        await self.fetched.wait()
        batch = []
        for tp in sorted(self.position):
            start, end = self.position[tp], min(self.position[tp] + 5, self.log_end[tp])
            batch += [(tp, Record(tp, o)) for o in range(start, end)]
            self.position[tp] = end  # the fetch moves on whether the records are yielded or not
        for tp, message in batch:
            if tp in active:
                yield tp, message


class Consumer(SafeCommitConsumer, ScriptedConsumer):
    _committed_on_broker = ScriptedConsumer._committed_on_broker


async def _take(consumer: Consumer) -> list[tuple[str, int]]:
    return [(tp.topic, m.offset) async for tp, m in consumer.getmany(1.0)]


async def _records(consumer: Consumer) -> list[Record]:
    return [m async for tp, m in consumer.getmany(1.0) if tp == FLAGGED]


def test_a_fetch_in_progress_when_the_sources_resume_hands_over_no_source_record() -> None:
    """faust's recovery resumes the source partitions, then seeks them to their committed
    offsets; a fetch in progress at that moment holds records from a position past records that
    were fetched and dropped during the recovery. None of them may reach the stream: the next
    fetch starts from the committed offset."""

    async def scenario() -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[Any]]:
        consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 218, CHANGELOG: 15}, 40)
        consumer.fetched.clear()
        in_flight = asyncio.ensure_future(_take(consumer))
        await asyncio.sleep(0)  # the fetch has started, with only the changelog active
        consumer.resume_partitions([FLAGGED])  # Recovery.on_recovery_completed
        consumer.fetched.set()
        first = await in_flight
        second = await _take(consumer)
        return first, second, consumer.seeks

    first, second, seeks = asyncio.run(scenario())
    assert first == [(CHANGELOG.topic, o) for o in range(15, 20)]
    assert seeks == [(FLAGGED, 40)]
    assert [o for topic, o in second if topic == FLAGGED.topic] == [40, 41, 42, 43, 44]


def test_resuming_only_changelog_partitions_does_not_seek_the_sources() -> None:
    async def scenario() -> tuple[list[tuple[str, int]], list[Any]]:
        consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 40, CHANGELOG: 15}, 40)
        consumer.active.add(FLAGGED)
        consumer.resume_partitions([CHANGELOG])
        return await _take(consumer), consumer.seeks

    taken, seeks = asyncio.run(scenario())
    assert seeks == []
    assert [o for topic, o in taken if topic == FLAGGED.topic] == [40, 41, 42, 43, 44]


def test_a_source_partition_without_a_committed_offset_is_read_from_its_beginning() -> None:
    async def scenario() -> tuple[list[tuple[str, int]], list[Any]]:
        consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 218, CHANGELOG: 20}, None)
        consumer.resume_partitions([FLAGGED])
        return await _take(consumer), consumer.seeks

    taken, seeks = asyncio.run(scenario())
    assert seeks == [(FLAGGED, 0)]
    assert [o for topic, o in taken if topic == FLAGGED.topic] == [0, 1, 2, 3, 4]


def _acked(consumer: Consumer, *offsets: int) -> None:
    consumer._acked.setdefault(FLAGGED, []).extend(offsets)
    consumer._acked_index.setdefault(FLAGGED, set()).update(offsets)


def test_commits_pass_transaction_markers_but_not_the_record_just_fetched() -> None:
    """Records at 10, 11, 13, 14, 16 (markers at 12 and 15). faust's drain loop reports each
    jump as ``_add_gap(tp, previous + 1, offset)``; 16 is fetched but not yet processed."""

    async def scenario() -> list[int | None]:
        consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 10, CHANGELOG: 20}, 10)
        await consumer._add_gap(FLAGGED, 12, 13)
        await consumer._add_gap(FLAGGED, 15, 16)
        _acked(consumer, 10, 11, 13, 14)
        first = consumer._new_offset(FLAGGED)
        consumer._committed_offset[FLAGGED] = first
        _acked(consumer, 16)
        return [first, consumer._new_offset(FLAGGED)]

    # 15 (the marker after 14) waits until a record past it is processed; then both pass
    assert asyncio.run(scenario()) == [15, 17]


def test_an_offset_acked_and_covered_by_a_gap_counts_once() -> None:
    consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 5, CHANGELOG: 20}, 5)
    consumer._gap[FLAGGED].addi(7, 8)  # as faust's own gap held the record at 7
    _acked(consumer, 5, 6, 7, 8, 9)
    assert consumer._new_offset(FLAGGED) == 10


def test_a_marker_at_the_committed_offset_does_not_stall_the_commits() -> None:
    """After a restart the committed offset often is a transaction marker: the first record
    after the seek there is one past it, a jump faust does not see."""

    async def scenario() -> int | None:
        consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 0, CHANGELOG: 20}, 20)
        await consumer.seek(FLAGGED, 20)
        consumer._after_seek(FLAGGED, SimpleNamespace(tp=FLAGGED, offset=21))
        _acked(consumer, 21, 22)
        return consumer._new_offset(FLAGGED)

    assert asyncio.run(scenario()) == 23


def test_the_record_at_the_committed_offset_is_processed_first() -> None:
    consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 0, CHANGELOG: 20}, 20)
    _acked(consumer, 21, 22)  # 20 is a record, not processed yet (no gap says otherwise)
    assert consumer._new_offset(FLAGGED) is None


def test_a_seek_back_before_faust_read_the_committed_offsets_asks_the_broker() -> None:
    """faust resumes the flow before it seeks to the committed offsets: the first seek back of a
    restarted worker must not take "not read yet" for "never committed" (offset 0)."""

    async def scenario() -> tuple[list[tuple[str, int]], list[Any]]:
        consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 0, CHANGELOG: 20}, None)
        consumer.broker_committed[FLAGGED] = 250
        consumer.resume_partitions([FLAGGED])
        return await _take(consumer), consumer.seeks

    taken, seeks = asyncio.run(scenario())
    assert seeks == [(FLAGGED, 250)]
    assert [o for topic, o in taken if topic == FLAGGED.topic] == [250, 251, 252, 253, 254]


def test_records_queued_before_a_seek_back_are_stale_and_their_acks_ignored() -> None:
    """Records fetched before a seek back may still wait for the stream (faust's topic queue, a
    ``take_events`` buffer): they come again from the fetch after the seek, so they are stale,
    stage 2 skips them, and their ack neither counts their offset nor holds the commits."""

    async def scenario() -> tuple[list[Record], list[Record]]:
        consumer.active.add(FLAGGED)
        queued = await _records(consumer)
        consumer.resume_partitions([FLAGGED])  # a table recovery ends: seek back to 40
        return queued, await _records(consumer)

    consumer = Consumer({FLAGGED: 300, CHANGELOG: 20}, {FLAGGED: 40, CHANGELOG: 20}, 40)
    queued, again = asyncio.run(scenario())
    assert consumer.seeks == [(FLAGGED, 40)]
    assert [r.offset for r in queued] == [r.offset for r in again] == [40, 41, 42, 43, 44]
    assert all(consumer.fetched_before_seek(r) for r in queued)  # type: ignore[arg-type]
    assert not any(consumer.fetched_before_seek(r) for r in again)  # type: ignore[arg-type]

    consumer._unacked_messages.update([queued[0], again[0]])
    assert consumer.ack(queued[0]) is False  # type: ignore[arg-type]
    assert queued[0].acked and queued[0] not in consumer._unacked_messages
    assert consumer._acked.get(FLAGGED, []) == []
    assert consumer._lowest_unacked(FLAGGED) == 40  # the copy fetched again, not yet acked
    assert consumer.ack(again[0]) is True  # type: ignore[arg-type]
    assert consumer._acked[FLAGGED] == [40]
