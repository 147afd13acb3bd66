"""Delayed labels applied in event time, so stage 1 does not depend on when labels arrive.

A label is published once its delay has passed: its record timestamp is the moment it became
known (the transaction time plus the label delay, as ``fraudstream produce`` stamps it). Stage 1
uses labels twice, and each use has its own event-time rule here:

* the **terminal table** (shared by every partition of a worker) gets every label known by the
  end of the segment about to be screened (its own delay filter then hides each label from
  transactions before its time, exactly);
* each partition's **online classifier** learns, before a segment, from the labels known at the
  segment's first transaction, of the transactions that partition screened.

Segments are cut at fixed stream positions (multiples of ``every`` screened transactions of the
partition), and released labels are ordered by (publication time, transaction id), so the labels
a transaction's scores depend on are a function of the partition's stream and the label
timestamps only: not of how a live worker's polls, a rebuild or a replay batch the records, not
of which other partitions the worker owns, and not of how early labels arrive. A label offered
after its time has been released is *late*: it is applied at the next segment and counted
(``late``); the worker's ``labels_wait`` (default on) reads the labels topic up to each batch's
event time first, so labels published before the transactions that pass their time are never
late.

Pure logic: the worker, replay and the offline history runner feed it; no Kafka here.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from streams.features.names import DAY_MS

if TYPE_CHECKING:
    from streams.online.supervised import OnlineClassifier
    from streams.schema import Transaction
    from streams.stage1.screen import ScreenedBatch, Screener

Label = tuple[str, str, int, int, str, float]
"""(transaction id, terminal id, transaction time ms, fraud 0/1, card id, amount); the card is
"" and the amount 0 when the label message does not carry them."""


def label_of(tx: Transaction, fraud: int) -> Label:
    """The label of a transaction, as the labels topic carries it (``decode_label``)."""
    return (tx.transaction_id, tx.terminal_id, tx.ts_ms, fraud, tx.card_id, tx.amount)


Released = tuple[int, str, int]
"""(publication time ms, transaction id, fraud 0/1) of a label released to the terminal table."""

KEEP_RELEASED_MS = 2 * DAY_MS
"""How far behind the latest release the released labels stay available to a partition that
joins the worker (its rebuild ended there): a partition rebuilt further back misses some."""


class LabelGate:
    """Labels waiting for the stream's event time to reach their publication time, and the
    released ones, kept for the classifiers of the partitions that have not reached them."""

    def __init__(self, keep_ms: int = KEEP_RELEASED_MS) -> None:
        self._held: list[tuple[int, str, Label]] = []  # heap of (known at, tx id, label)
        # a list, not a deque: ``released_since`` indexes it from a cursor, and a deque's
        # indexing away from its ends walks its blocks (a profile of a worker with labels
        # flowing put that walk at a tenth of stage 1's time); ``trim`` drops a prefix at once
        self._released: list[Released] = []
        self._base = 0  # absolute index of _released[0]
        self.released_upto = -1  # every label known at or before this has been released
        self.keep_ms = keep_ms
        self.watermark = -1  # latest publication time offered so far
        self.offered = 0
        self.late = 0

    def __len__(self) -> int:
        """Labels not yet released to the terminal table."""
        return len(self._held)

    def held(self) -> list[tuple[int, str, Label]]:
        """The labels not released yet (a heap of (publication time, id, label))."""
        return list(self._held)

    def restore(
        self, held: list[tuple[int, str, Label]], released_upto: int, watermark: int
    ) -> None:
        """Continue from a checkpoint: ``held`` (a heap, ``held``), nothing released to keep."""
        self._held = held
        self._released.clear()
        self._base = 0
        self.released_upto, self.watermark = released_upto, watermark

    def offer(self, label: Label, known_at_ms: int) -> None:
        if known_at_ms <= self.released_upto:
            self.late += 1
        heapq.heappush(self._held, (known_at_ms, label[0], label))
        self.offered += 1
        if known_at_ms > self.watermark:
            self.watermark = known_at_ms

    def for_terminals(self, upto_ms: int) -> Iterator[Label]:
        """Labels known at or before ``upto_ms``, in (publication time, transaction id) order;
        each is kept for the classifiers."""
        held, released = self._held, self._released
        while held and held[0][0] <= upto_ms:
            known, tid, label = heapq.heappop(held)
            released.append((known, tid, label[3]))
            yield label
        if upto_ms > self.released_upto:
            self.released_upto = upto_ms

    @property
    def end(self) -> int:
        """Absolute index after the last released label."""
        return self._base + len(self._released)

    def released_since(self, cursor: int, upto_ms: int) -> Iterator[tuple[int, Released]]:
        """(index, label) of the released labels from absolute index ``cursor`` on, while their
        publication time is at or before ``upto_ms``."""
        released, base = self._released, self._base
        i = max(cursor, base)
        while i - base < len(released) and released[i - base][0] <= upto_ms:
            yield i, released[i - base]
            i += 1

    def first_after(self, known_ms: int) -> int:
        """Absolute index of the first released label published after ``known_ms``."""
        for i, item in enumerate(self._released):
            if item[0] > known_ms:
                return self._base + i
        return self.end

    def trim(self, cursors: list[int]) -> None:
        """Forget released labels every cursor has passed and older than ``keep_ms``."""
        released = self._released
        lowest = min(cursors, default=self.end)
        horizon = self.released_upto - self.keep_ms
        limit = min(len(released), lowest - self._base)
        drop = 0
        while drop < limit and released[drop][0] < horizon:
            drop += 1
        if drop:
            del released[:drop]
            self._base += drop


class ClassifierFeed:
    """One partition's online classifier, fed by the gate: before each segment, the released
    labels published up to the segment's start, of the transactions this partition screened.

    A partition rebuilt elsewhere (``PartitionedScreener.adopt``) joins with what it has learnt
    (``learned_through``), the labels that were released there and not learnt yet
    (``backlog``), and takes from this gate only the labels published after ``skip_through``
    (those up to it are in the backlog, or were learnt)."""

    def __init__(
        self,
        gate: LabelGate,
        learned_through: int = -1,
        backlog: list[Released] | None = None,
        skip_through: int | None = None,
    ):
        self.gate = gate
        self.learned_through = learned_through  # every label known at or before: learned
        self.skip_through = learned_through if skip_through is None else skip_through
        self.backlog: deque[Released] = deque(backlog or [])
        self.cursor = gate.first_after(self.skip_through)

    def learn(self, classifier: OnlineClassifier, horizon_ms: int) -> None:
        if horizon_ms <= self.learned_through:
            return
        learn = classifier.learn_label_if_cached
        backlog = self.backlog
        while backlog and backlog[0][0] <= horizon_ms:
            known, tid, fraud = backlog.popleft()
            learn(tid, bool(fraud), known)
        skip = self.skip_through
        cursor = self.cursor
        for i, (known, tid, fraud) in self.gate.released_since(self.cursor, horizon_ms):
            if known > skip:
                learn(tid, bool(fraud), known)
            cursor = i + 1
        self.cursor = cursor
        self.learned_through = horizon_ms

    def frauds_to_learn(self, horizon_ms: int) -> Iterator[str]:
        """Transaction ids of the fraud labels ``learn(…, horizon_ms)`` would learn next."""
        if horizon_ms <= self.learned_through:
            return
        for known, tid, fraud in self.backlog:
            if known > horizon_ms:
                break
            if fraud:
                yield tid
        skip = self.skip_through
        for _, (known, tid, fraud) in self.gate.released_since(self.cursor, horizon_ms):
            if fraud and known > skip:
                yield tid

    def pending(self, upto_ms: int) -> list[Released]:
        """Released labels not learnt yet, published up to ``upto_ms`` (for an adoption)."""
        items = [x for x in self.backlog if x[0] <= upto_ms]
        items += [
            x
            for _, x in self.gate.released_since(self.cursor, upto_ms)
            if x[0] > max(self.skip_through, self.learned_through)
        ]
        return items


def segments(position: int, n: int, every: int) -> Iterator[tuple[int, int]]:
    """(start, end) slices of a batch of ``n`` records whose first is at stream ``position``,
    cut where the position is a multiple of ``every``."""
    start = 0
    while start < n:
        end = min(n, ((position + start) // every + 1) * every - position)
        yield start, end
        start = end


def release_labels(
    screener: Screener,
    gate: LabelGate,
    feed: ClassifierFeed,
    txs: list[Transaction],
    horizon_ms: int | None = None,
) -> None:
    """Release the labels a segment may see to the screener (``txs``: non-empty, within one
    segment), before it is screened. ``horizon_ms``: the event time of the segment's first
    transaction, when ``txs`` continue a segment whose start was screened in an earlier call."""
    release_to_terminals(screener, gate, txs)
    feed.learn(screener.classifier, txs[0].ts_ms if horizon_ms is None else horizon_ms)


def release_to_terminals(screener: Screener, gate: LabelGate, txs: list[Transaction]) -> None:
    """The first half of ``release_labels``: the terminal table gets the labels known by the
    segment's last transaction."""
    add_label = screener.engine.add_label
    for _, terminal, ts_ms, fraud, card, amount in gate.for_terminals(max(tx.ts_ms for tx in txs)):
        add_label(terminal, ts_ms, fraud, card, amount)


def screen_segment(
    screener: Screener,
    gate: LabelGate,
    feed: ClassifierFeed,
    txs: list[Transaction],
    horizon_ms: int | None = None,
) -> ScreenedBatch:
    """Release the labels a segment may see, then screen it (``release_labels``)."""
    release_labels(screener, gate, feed, txs, horizon_ms)
    return screener.screen(txs)
