"""Batch-independent versions of stage 1's recent-traffic calibrations.

``AnomalyScorer.percentile`` ranks a batch against the window *before* the batch, and
``FlagPolicy`` takes one budget threshold per batch *after* adding it, so both depend on where
batch boundaries fall. A live worker's batches depend on timing, a rebuild reads in other
chunks, a replay merges partitions: the same stream would get different anomaly scores and
different forward decisions, and a record processed twice after a crash could be decided two
ways. Here the reference (sorted window) is refreshed at fixed stream positions instead: the
value at stream position i is ranked against, and thresholded by, the last ``size`` values before
position ``floor(i / every) * every``. That depends on the stream only, not on the batching, and
costs one sort per ``every`` values (the batch-wise versions sort once per batch).

Used by ``streams.recovery.state.PartitionedScreener`` for the stream workers and replay; meant
to move into ``streams/online/window.py`` and ``streams/stage1/policy.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from streams.online.window import RecentValues
from streams.stage1.policy import FlagPolicy

if TYPE_CHECKING:
    from streams.stage1.screen import Screener

CHECKPOINT_EVERY = 1000
MIN_BUDGET_WINDOW = 1000  # as FlagPolicy: no budget while the reference holds fewer values


class CheckpointedValues(RecentValues):
    """``RecentValues`` whose ``rank`` and ``quantiles`` use the window as it was at the last
    checkpoint (every ``every`` values), so results do not depend on batch boundaries."""

    def __init__(self, size: int, every: int = CHECKPOINT_EVERY):
        super().__init__(size)
        self.size = size
        self.every = every
        self.added = 0
        self._ref = np.empty(0)  # sorted window at the last checkpoint

    def _segments(self, values: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, end, sorted reference) for the runs of ``values`` between checkpoints, as if
        ``values`` were appended to the stream."""
        n, start, ref = len(values), self.added, self._ref
        combined: np.ndarray | None = None
        pos = 0
        while pos < n:
            nxt = ((start + pos) // self.every + 1) * self.every - start
            end = min(n, nxt)
            yield pos, end, ref
            if end < n:  # a checkpoint falls inside the batch: the window just before it
                if combined is None:
                    combined = np.concatenate([self.values(), values])
                upto = len(combined) - n + end
                ref = np.sort(combined[max(0, upto - self.size) : upto])
            pos = end

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Share of the checkpoint reference strictly below each value (0 when empty)."""
        out = np.zeros(len(values))
        for a, b, ref in self._segments(values):
            if len(ref):
                out[a:b] = np.searchsorted(ref, values[a:b], side="left") / len(ref)
        return out

    def quantiles(
        self, values: np.ndarray, q: float, min_size: int, positive_only: bool = False
    ) -> np.ndarray:
        """For each value's position, the ``q`` quantile of its reference (inf while the
        reference holds fewer than ``min_size`` values). ``positive_only`` leaves zeros out of
        the reference (an unlearned model's output)."""
        out = np.full(len(values), np.inf)
        for a, b, ref in self._segments(values):
            if positive_only:
                ref = ref[ref > 0]
            if len(ref) >= min_size:
                out[a:b] = np.quantile(ref, q)
        return out

    def add(self, values: np.ndarray) -> None:
        n, old = len(values), self.added
        checkpoint = ((old + n) // self.every) * self.every
        if checkpoint > old:  # the reference at the last checkpoint passed, as _segments has it
            # the window before this batch is read only here (a copy of up to ``size`` values)
            combined = np.concatenate([self.values(), values])
            upto = len(combined) - n + checkpoint - old
            self._ref = np.sort(combined[max(0, upto - self.size) : upto])
        super().add(values)
        self.added = old + n


class StreamFlagPolicy(FlagPolicy):
    """``FlagPolicy`` with the budget threshold of each transaction taken from the
    checkpointed window (``CheckpointedValues``) instead of once per batch."""

    def __init__(self, base: FlagPolicy, window: int = 50_000):
        super().__init__(
            base.probability_threshold, base.anomaly_threshold, base.budget, window=window
        )
        self._stream = CheckpointedValues(window)

    def flag(
        self, rule_flag: np.ndarray, probability: np.ndarray, anomaly: np.ndarray
    ) -> np.ndarray:
        if self.budget > 0:
            # The online classifier outputs exactly 0 until it has learned from a label; those
            # zeros say nothing about the scale of its later scores, so they are left out of the
            # reference (otherwise every first positive score would look like the top share).
            budget = self._stream.quantiles(
                probability, 1.0 - self.budget, MIN_BUDGET_WINDOW, positive_only=True
            )
        else:
            budget = np.full(len(probability), np.inf)
        self._stream.add(probability)
        return (
            rule_flag
            | (probability >= self.probability_threshold)
            | (probability > budget)  # strict: ties (e.g. an unlearned model's zeros) never flood
            | (anomaly >= self.anomaly_threshold)
        )


def make_batch_independent(screener: Screener) -> Screener:
    """Give a screener the checkpointed calibrations, so its results do not depend on where
    batch boundaries fall (stream workers, rebuilds, replay and the offline paths alike)."""
    recent = getattr(screener.anomaly, "_recent", None)
    if type(recent) is RecentValues:
        setattr(screener.anomaly, "_recent", CheckpointedValues(len(recent._buf)))  # noqa: B010
    policy = screener.policy
    if type(policy) is FlagPolicy:
        screener.policy = StreamFlagPolicy(policy, len(policy._recent._buf))
    return screener
