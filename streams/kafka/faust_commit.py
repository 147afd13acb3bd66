"""A faust consumer that never commits an offset whose record was not processed.

faust-streaming 0.15.3 can commit past flagged records stage 2 never decided, and a kill -9
after such a commit loses them for good (measured with ``fraudstream crashtest`` on the embedded
broker: 13 to 153 flagged transactions without a decision in runs with one or two stage-2
kills). The holes, all in ``faust.transport.consumer.Consumer``:

1. **Records fetched while the flow is stopped are dropped, and the gap is filled as if they
   were acked.** During a rebalance's table recovery the flow is stopped; ``getmany`` drops
   what aiokafka already handed over (its position is past them), and faust seeks back to the
   committed offsets only *before* the recovery. When the flow resumes, the fetch continues
   past the dropped records; the drain loop sees the jump in offsets, records it as a "gap"
   (meant for transaction markers), and ``_new_offset`` counts the gap as acked: the next
   commit passes records nobody processed.
2. **Stale records are acked.** The stream skips records queued from an earlier assignment
   (another ``generation_id``, or the flow stopped) *and acks them*, so their offsets can be
   committed while the same records, fetched again, are still being scored.
3. **An off-by-one at the head.** ``_new_offset`` holds back only when the lowest acked offset is
   more than one past the committed offset, which is the *next* record to process; and it does
   not check the head at all when the committed offset is 0 or unknown.

4. **Records ahead of the committed offset reach the stream.** Hole 1 leaves the fetch position
   past records nobody processed, and faust resumes the source partitions (``Recovery``:
   ``resume_partitions``) *before* it seeks them to their committed offsets (``perform_seek``,
   which leaves a partition without a committed offset where it is). A fetch in progress hands
   the stream the records at that position, and they are processed ahead of the dropped ones.
   Nothing is lost (the commit waits for the dropped records, fetched again after the seek), but
   a record decided before the earlier records of its card were is decided with a card history
   that misses them: stage 2's ``card_context`` counts came out lower than on the copy decided
   after the seek (measured on Apache Kafka: every one of 194 differing duplicates of a kill test
   was decided in that window, or in the batch in flight when it closed).

5. **Transaction markers stall the commits.** A topic written in Kafka transactions (stage 1's
   ``--exactly-once``) has offsets without a record: one marker per transaction, and aborted
   records. faust records the offsets a fetch jumps over as a gap, but its gap also holds the
   record just fetched (not yet processed), which then counts twice once acked, and it never
   holds the committed offset itself. The list of acked offsets then breaks its first
   consecutive run at every such duplicate, and at a marker sitting at the committed offset
   (after every restart, often) it never starts: commits crawled a few offsets at a time
   behind thousands of processed records (measured on Apache Kafka), so a restart processed
   them all again, and in exactly-once mode their outputs were committed twice.

6. **The first seek back of a worker can come before faust knows its committed offsets.** faust
   resumes the flow after a table recovery and only then seeks the source partitions to their
   committed offsets; a fetch in between saw no committed offset yet, so the seek back went to
   the partition's beginning and the stream got hundreds of records already decided (identical
   duplicates at least once, and in exactly-once mode decisions committed twice: 2 and 3,182
   in two kill runs on Apache Kafka).

7. **Records queued before a seek back are processed after it, and again once fetched again.**
   The seek back of 1. and 4. moves the fetch position, but records fetched before it may
   still wait for the stream (the topic's queue, a ``take_events`` buffer). Stage 2 decided them
   after the seek, and again when the fetch from the committed offset brought them back: two
   decisions of one transaction, both committed in exactly-once mode (1 to 19 per kill run on
   Apache Kafka with faust committing every 50 ms, 1 in about 18 runs at its default 2.8 s).

``SafeCommitConsumer`` closes them: when the flow or a source partition resumes, the acks and
gaps recorded since the last commit are forgotten and the source partitions are sought back to
their committed offsets before the stream gets another of their records (records fetched before
that seek are dropped: they are fetched again after it; records in between are processed again,
and decisions are identical, keyed by transaction id); an ack of a record from another
generation is ignored; the head must be exactly the committed offset; and a commit never passes
the lowest record the stream has taken and not acked; a gap is exactly the offsets between two
records, or between a seek and the first record after it, and an acked offset counts once; an
offset faust has not read yet is asked of the broker; a record fetched before its partition's
latest seek back is stale (``fetched_before_seek``): stage 2 skips it and its ack is ignored.

In exactly-once mode (``app.commit_barrier`` set, ``streams.kafka.faust_transactions``) a commit
waits until no batch is between its outputs and its ack, and the seek back first aborts the
source partitions' open transactions, whose outputs belong to the records processed again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from weakref import WeakKeyDictionary

from faust.transport.consumer import ensure_TP
from faust.types import TP, Message
from faust.utils.functional import consecutive_numbers

from streams.kafka.faust_transactions import restart_transactions


class SafeCommitConsumer:
    """Mixin for a ``faust.transport.consumer.Consumer`` subclass (before it in the bases)."""

    app: Any
    _acked: Any
    _acked_index: Any
    _gap: Any
    _committed_offset: Any
    _read_offset: Any
    _unacked_messages: Any
    _reseek_pending: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sought: dict[TP, int] = {}  # partition -> offset sought, until a record arrives
        self._seek_backs: dict[TP, int] = {}  # source partition -> seek backs so far (7.)
        # source record -> its partition's seek backs when it was fetched (7.)
        self._fetched_at: WeakKeyDictionary[Message, int] = WeakKeyDictionary()

    # --- 1. and 4. seek back once the flow or a source partition resumes ---------------------
    def resume_flow(self) -> None:
        super().resume_flow()  # type: ignore[misc]
        self._reseek_pending = True

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().resume_partitions(tps)  # type: ignore[misc]
        acking = self.app.topics.acks_enabled_for
        if any(acking(tp.topic) for tp in tps):
            self._reseek_pending = True

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if self._reseek_pending:
            self._reseek_pending = False
            await self._seek_sources_to_committed()
        acking = self.app.topics.acks_enabled_for
        async for tp, message in super().getmany(timeout):  # type: ignore[misc]
            if acking(tp.topic):
                if self._reseek_pending:
                    # fetched from where the position was before the seek still to come (a
                    # fetch in progress when the partition resumed): fetched again after it
                    continue
                self._fetched_at[message] = self._seek_backs.get(tp, 0)
            if tp in self._sought:
                self._after_seek(tp, message)
            yield tp, message

    async def _seek_sources_to_committed(self) -> None:
        barrier = getattr(self.app, "commit_barrier", None)
        if barrier is None:
            await self._seek_back()
            return
        async with barrier.quiet():
            await restart_transactions(self.app, self._sources())
            await self._seek_back()

    def _sources(self) -> list[TP]:
        acking = self.app.topics.acks_enabled_for
        return [tp for tp in self.assignment() if acking(tp.topic)]  # type: ignore[attr-defined]

    async def _seek_back(self) -> None:
        sources = self._sources()
        unknown = [tp for tp in sources if self._committed_offset[tp] is None]
        if unknown:
            # a worker's first seek back can come before faust has read its committed offsets
            # (6.): ask the broker rather than take "none" for "never committed"
            for tp, offset in (await self._committed_on_broker(unknown)).items():
                if offset is not None and offset >= 0:
                    self._committed_offset[tp] = offset
        for tp in sources:
            self._seek_backs[tp] = self._seek_backs.get(tp, 0) + 1
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)
            # never committed (None): offset 0, which the reset policy (earliest) turns into
            # the log start if that is later
            await self.seek(tp, self._committed_offset[tp] or 0)

    async def _committed_on_broker(self, tps: list[TP]) -> dict[TP, int | None]:
        """The group's committed offsets of ``tps`` (None: none); the faust consumer of
        ``streams.kafka.faust_fetch`` asks its aiokafka consumer."""
        raise NotImplementedError

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        barrier = getattr(self.app, "commit_barrier", None)
        if barrier is None:
            return bool(await super().commit(*args, **kwargs))  # type: ignore[misc]
        async with barrier.quiet():
            return bool(await super().commit(*args, **kwargs))  # type: ignore[misc]

    # --- 2. stale acks ---------------------------------------------------------------------
    def ack(self, message: Message) -> bool:
        generation = getattr(message, "generation_id", None)
        if generation is not None and generation != self.app.consumer_generation_id:
            return False  # a record of an earlier assignment: it is fetched again after the seek
        if self.fetched_before_seek(message):
            message.acked = True  # done with: fetched again after the seek, acked then (7.)
            self._unacked_messages.discard(message)
            return False
        return bool(super().ack(message))  # type: ignore[misc]

    # --- 7. records queued before a seek back ----------------------------------------------
    def fetched_before_seek(self, message: Message) -> bool:
        """Whether ``message`` was fetched before its partition's latest seek back: it comes
        again from the fetch after the seek, and must not be processed now."""
        fetched = self._fetched_at.get(message)
        return fetched is not None and fetched < self._seek_backs.get(message.tp, 0)

    # --- 3. the commit offset --------------------------------------------------------------
    def _lowest_unacked(self, tp: TP) -> int | None:
        current = (None, self.app.consumer_generation_id)
        offsets = [
            m.offset
            for m in list(self._unacked_messages)
            if m.tp == tp
            and not m.acked
            and getattr(m, "generation_id", None) in current
            and not self.fetched_before_seek(m)
        ]
        return min(offsets) if offsets else None

    def _new_offset(self, tp: TP) -> int | None:
        acked: list[int] = self._acked[tp]
        if not acked:
            return None
        committed = self._committed_offset[tp]
        top = max(acked)
        offsets = set(acked)
        gap_for_tp = self._gap[tp]
        if gap_for_tp:  # offsets without a record (5.), up to the highest acked record
            for entry in gap_for_tp.overlap(0, top):
                offsets.update(range(entry.begin, min(entry.end, top)))
            gap_for_tp.chop(0, top)
        # an offset is acked once even when faust's gap also covered it, and offsets below the
        # committed one are done: either would cut the consecutive run short (5.)
        ordered = sorted(o for o in offsets if committed is None or o >= committed)
        acked[:] = ordered
        if not ordered or (committed is not None and ordered[0] > committed):
            return None  # the record at the committed offset is not acked yet
        batch = next(consecutive_numbers(ordered))
        floor = self._lowest_unacked(tp)
        if floor is not None:
            batch = [offset for offset in batch if offset < floor]
            if not batch:
                return None
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1

    # --- 5. offsets without a record --------------------------------------------------------
    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """faust calls this when a fetched record's offset jumps past the previous one's (the
        offsets between held a transaction marker or an aborted record). Its own version
        counts the record just fetched, not yet processed, as part of the gap, and starts it
        one past the committed offset (3.); here the gap is exactly the offsets between."""
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)
        if offset_from < offset_to:
            self._gap[tp].addi(offset_from, offset_to)

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)  # type: ignore[misc]
        self._sought[ensure_TP(partition)] = offset

    def _after_seek(self, tp: TP, message: Message) -> None:
        """The first record after a seek: the offsets it jumps over have no record (faust sees
        no jump there, since its read offset is the sought one)."""
        sought = self._sought.pop(tp, None)
        if sought is not None and message.offset > sought:
            self._gap[tp].addi(sought, message.offset)


def stale_records(app: Any) -> Callable[[Message], bool]:
    """The check stage 2 skips records with: fetched before their partition's latest seek back
    by ``app``'s consumer (7.)."""

    def stale(message: Message) -> bool:
        return bool(app.consumer.fetched_before_seek(message))

    return stale
