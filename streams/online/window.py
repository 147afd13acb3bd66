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
from typing import TYPE_CHECKING

import numpy as np

from streams.errors import StateError

if TYPE_CHECKING:
    from streams.checkpoint.codec import StateReader, StateWriter

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

    def save_state(self, w: StateWriter, name: str) -> None:
        w.numpy(f"{name}.buf", self._buf)
        w.meta[name] = [self._filled, self._pos]

    def load_state(self, r: StateReader, name: str) -> None:
        buf = r.numpy(f"{name}.buf")
        if buf.shape != self._buf.shape:
            raise StateError(f"{name}: window of {len(buf)} values, configured {len(self._buf)}")
        self._buf = buf
        self._filled, self._pos = r.meta[name]

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
    """``RecentValues`` whose ``rank`` and the references of ``segments`` use the window as it
    was at the last checkpoint (every ``every`` values), so results do not depend on batch
    boundaries. The next checkpoint's sorted window is the last one with the ``every`` values
    that left taken out and the ``every`` that came in merged in (the same array a sort gives,
    at a fraction of the cost); the buffer keeps ``every`` values beyond the window for that."""

    def __init__(self, size: int, every: int = CHECKPOINT_EVERY):
        super().__init__(size + every)
        self.size = size
        self.every = every
        self.added = 0
        self._ref = np.empty(0)  # sorted window at the last checkpoint
        self._ref_at = 0  # that checkpoint's stream position
        self._ahead: tuple[int, np.ndarray] | None = None  # a later one ``segments`` computed
        self._ahead_of: np.ndarray | None = None  # the values it was computed with

    def save_state(self, w: StateWriter, name: str) -> None:
        """The buffer and the positions; not the reference, which ``load_state`` sorts again
        from the buffer (it is the sorted window before ``_ref_at``, and the buffer reaches
        back ``every`` values beyond the window): a third of the checkpoint's bytes."""
        super().save_state(w, name)
        w.meta[f"{name}.at"] = [self.added, self._ref_at]

    def load_state(self, r: StateReader, name: str) -> None:
        super().load_state(r, name)
        self.added, self._ref_at = r.meta[f"{name}.at"]
        first = self.added - len(self)  # stream position of the buffer's oldest value
        lo = max(0, self._ref_at - self.size)
        if lo < first:
            raise StateError(f"{name}: the buffer does not reach back to the reference's window")
        self._ref = np.sort(self.values()[lo - first : self._ref_at - first])
        self._ahead, self._ahead_of = None, None

    def next_checkpoint(self, position: int) -> int:
        """The first checkpoint after stream position ``position``: every ``every`` values, and
        five times as often before the first (a fresh stream gets a reference soon)."""
        early = self.every // 5
        if early and position < self.every:
            return (position // early + 1) * early
        return (position // self.every + 1) * self.every

    def _window_at(self, combined: np.ndarray, base: int, checkpoint: int) -> np.ndarray:
        """The sorted values at stream positions [checkpoint - size, checkpoint), given
        ``combined[k]`` at stream position ``base + k``."""
        if self._ahead is not None and self._ahead[0] == checkpoint:
            return self._ahead[1]
        prev, prev_at = self._ref, self._ref_at
        if self._ahead is not None and self._ahead[0] == checkpoint - self.every:
            prev, prev_at = self._ahead[1], self._ahead[0]
        lo = max(0, checkpoint - self.size)
        prev_lo = max(0, prev_at - self.size)
        ref = None
        # slide the last reference when it is the window ending at prev_at and what changed is
        # in ``combined`` (while the window still grows, nothing leaves)
        if (
            0 < checkpoint - prev_at <= self.size // 2
            and len(prev) == prev_at - prev_lo
            and base <= prev_lo <= lo
        ):
            leaving = combined[prev_lo - base : lo - base]
            entering = combined[prev_at - base : checkpoint - base]
            ref = _slide(prev, leaving, entering)
        if ref is None:
            ref = np.sort(combined[lo - base : checkpoint - base])
        self._ahead = (checkpoint, ref)
        return ref

    def segments(self, values: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, end, sorted reference) for the runs of ``values`` between checkpoints, as if
        ``values`` were appended to the stream."""
        n, start, ref = len(values), self.added, self._ref
        combined: np.ndarray | None = None
        base = start - len(self)
        self._ahead, self._ahead_of = None, values
        pos = 0
        while pos < n:
            end = min(n, self.next_checkpoint(start + pos) - start)
            yield pos, end, ref
            if end < n:  # a checkpoint falls inside the batch: the window just before it
                if combined is None:
                    combined = np.concatenate([self.values(), values])
                ref = self._window_at(combined, base, start + end)
            pos = end

    def rank(self, values: np.ndarray, empty: float = 0.0) -> np.ndarray:
        """Share of the checkpoint reference strictly below each value (``empty`` while the
        reference is empty)."""
        out = np.full(len(values), empty)
        for a, b, ref in self.segments(values):
            if len(ref):
                out[a:b] = np.searchsorted(ref, values[a:b], side="left") / len(ref)
        return out

    def add(self, values: np.ndarray) -> None:
        n, old = len(values), self.added
        checkpoint = old  # the last checkpoint this batch passes (old: none)
        while (after := self.next_checkpoint(checkpoint)) <= old + n:
            checkpoint = after
        if values is not self._ahead_of:  # segments saw other values: its references are not these
            self._ahead = None
        if checkpoint > old:  # the reference at the last checkpoint passed, as segments has it
            combined = np.concatenate([self.values(), values])
            self._ref = self._window_at(combined, old - len(self), checkpoint)
            self._ref_at = checkpoint
        self._ahead, self._ahead_of = None, None
        super().add(values)
        self.added = old + n


def _slide(prev: np.ndarray, leaving: np.ndarray, entering: np.ndarray) -> np.ndarray | None:
    """``prev`` (sorted) without the values ``leaving`` and with ``entering``, sorted; None when
    a NaN makes the merge ambiguous (the caller sorts instead)."""
    if np.isnan(leaving).any() or np.isnan(entering).any():
        return None
    out = np.sort(leaving)
    first = np.searchsorted(out, out, side="left")  # each value's first copy among the leaving
    at = np.searchsorted(prev, out, side="left") + (np.arange(len(out)) - first)
    kept = np.delete(prev, at)
    come = np.sort(entering)
    return np.insert(kept, np.searchsorted(kept, come, side="left"), come)
