"""Sliding windows of the most recent values of a score, for calibration and budgets.

``RecentValues`` is the plain window. ``CheckpointedValues`` is what stage 1 uses: its reference
(the sorted window) is refreshed at fixed stream positions, so a value at stream position i is
ranked against, and thresholded by, the last ``size`` values before position
``floor(i / every) * every``. That depends on the stream only, not on where batch boundaries
fall (a live worker's polls, a rebuild's chunks, a replay's merge), so the same stream gets the
same scores and the same forward decisions however it was batched, and a record processed twice
after a crash is decided the same way. It costs one sort per ``every`` values.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHECKPOINT_EVERY = 1000


class RecentValues:
    """The last ``size`` values seen, in a ring buffer.

    >>> w = RecentValues(4)
    >>> w.add(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    >>> w.values().tolist()
    [2.0, 3.0, 4.0, 5.0]
    >>> w.rank(np.array([3.5])).tolist()
    [0.5]
    """

    def __init__(self, size: int):
        self._buf = np.zeros(size)
        self._filled = 0
        self._pos = 0

    def __len__(self) -> int:
        return self._filled

    def add(self, values: np.ndarray) -> None:
        buf, n, size = self._buf, len(values), len(self._buf)
        if n >= size:
            buf[:] = values[-size:]
            self._filled, self._pos = size, 0
            return
        end = self._pos + n
        if end <= size:
            buf[self._pos : end] = values
        else:
            cut = size - self._pos
            buf[self._pos :] = values[:cut]
            buf[: n - cut] = values[cut:]
        self._pos = end % size
        self._filled = min(size, self._filled + n)

    def values(self) -> np.ndarray:
        if self._filled < len(self._buf):
            return self._buf[: self._filled]
        return np.roll(self._buf, -self._pos)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self._buf[: self._filled], q)) if self._filled else float("nan")

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Share of the window strictly below each value (0 when the window is empty)."""
        if not self._filled:
            return np.zeros(len(values))
        ordered = np.sort(self._buf[: self._filled])
        return np.searchsorted(ordered, values, side="left") / self._filled


class CheckpointedValues(RecentValues):
    """``RecentValues`` whose ``rank`` and ``quantiles`` use the window as it was at the last
    checkpoint (every ``every`` values), so results do not depend on batch boundaries."""

    def __init__(self, size: int, every: int = CHECKPOINT_EVERY):
        super().__init__(size)
        self.size = size
        self.every = every
        self.added = 0
        self._ref = np.empty(0)  # sorted window at the last checkpoint

    def segments(self, values: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
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
        for a, b, ref in self.segments(values):
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
        for a, b, ref in self.segments(values):
            if positive_only:
                ref = ref[ref > 0]
            if len(ref) >= min_size:
                out[a:b] = np.quantile(ref, q)
        return out

    def add(self, values: np.ndarray) -> None:
        n, old = len(values), self.added
        checkpoint = ((old + n) // self.every) * self.every
        if checkpoint > old:  # the reference at the last checkpoint passed, as segments has it
            # the window before this batch is read only here (a copy of up to ``size`` values)
            combined = np.concatenate([self.values(), values])
            upto = len(combined) - n + checkpoint - old
            self._ref = np.sort(combined[max(0, upto - self.size) : upto])
        super().add(values)
        self.added = old + n
