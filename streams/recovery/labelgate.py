"""Delayed labels applied in event time, so stage 1 does not depend on when labels arrive.

A label is published once its delay has passed: its record timestamp is the moment it became
known (the transaction time plus the label delay, as ``fraudstream produce`` stamps it). Stage 1
uses labels twice, and each use has its own event-time rule here:

* the **terminal table** gets every label known by the end of the segment about to be screened
  (its own delay filter then hides each label from transactions before its time, exactly);
* the **online classifier** learns, before a segment, from the labels known at the segment's
  first transaction (it scores a whole segment with one set of weights).

Segments are cut at fixed stream positions (multiples of ``every`` screened transactions of the
partition), so the labels a transaction's scores depend on are a function of the stream and the
label timestamps only: not of how a live worker's polls, a rebuild or a replay batch the records,
and not of how early labels arrive. A label that arrives *late* (its segment already screened) is
applied at the next segment; ``FRAUD_LABELS_WAIT`` makes a worker wait for the labels topic instead
(closed histories: ``evaluate --through-kafka``), which makes a live run equal to the offline one.

Pure logic: the worker, replay and the offline history runner feed it; no Kafka here.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.schema import Transaction
    from streams.stage1.screen import ScreenedBatch, Screener

Label = tuple[str, str, int, int]
"""(transaction id, terminal id, transaction time ms, fraud 0/1)."""


class LabelGate:
    """Labels waiting for the stream's event time to reach their publication time."""

    def __init__(self) -> None:
        self._held: list[tuple[int, int, Label]] = []  # heap of (known at, arrival seq, label)
        self._for_classifier: deque[tuple[int, str, int]] = deque()  # (known at, tx id, fraud)
        self._seq = 0
        self.watermark = -1  # latest publication time offered so far
        self.offered = 0

    def __len__(self) -> int:
        """Labels not yet handed to both consumers."""
        return len(self._held) + len(self._for_classifier)

    def offer(self, label: Label, known_at_ms: int) -> None:
        heapq.heappush(self._held, (known_at_ms, self._seq, label))
        self._seq += 1
        self.offered += 1
        if known_at_ms > self.watermark:
            self.watermark = known_at_ms

    def for_terminals(self, upto_ms: int) -> Iterator[Label]:
        """Labels known at or before ``upto_ms``, in publication order (ties: arrival order);
        each is then queued for the classifier."""
        held, queue = self._held, self._for_classifier
        while held and held[0][0] <= upto_ms:
            known, _, label = heapq.heappop(held)
            queue.append((known, label[0], label[3]))
            yield label

    def for_classifier(self, upto_ms: int) -> Iterator[tuple[str, int]]:
        """(transaction id, fraud) of the labels known at or before ``upto_ms`` that already went
        to the terminal table, in the same order."""
        queue = self._for_classifier
        while queue and queue[0][0] <= upto_ms:
            _, tid, fraud = queue.popleft()
            yield tid, fraud


def segments(position: int, n: int, every: int) -> Iterator[tuple[int, int]]:
    """(start, end) slices of a batch of ``n`` records whose first is at stream ``position``,
    cut where the position is a multiple of ``every``."""
    start = 0
    while start < n:
        end = min(n, ((position + start) // every + 1) * every - position)
        yield start, end
        start = end


def release_labels(
    screener: Screener, gate: LabelGate, txs: list[Transaction], horizon_ms: int | None = None
) -> None:
    """Release the labels a segment may see to the screener (``txs``: non-empty, within one
    segment), before it is screened. ``horizon_ms``: the event time of the segment's first
    transaction, when ``txs`` continue a segment whose start was screened in an earlier call."""
    add_label = screener.engine.add_label
    for _, terminal, ts_ms, fraud in gate.for_terminals(max(tx.ts_ms for tx in txs)):
        add_label(terminal, ts_ms, fraud)
    learn = screener.classifier.learn_label
    for tid, fraud in gate.for_classifier(txs[0].ts_ms if horizon_ms is None else horizon_ms):
        learn(tid, bool(fraud))


def screen_segment(
    screener: Screener, gate: LabelGate, txs: list[Transaction], horizon_ms: int | None = None
) -> ScreenedBatch:
    """Release the labels a segment may see, then screen it (``release_labels``)."""
    release_labels(screener, gate, txs, horizon_ms)
    return screener.screen(txs)
