"""A sliding window of the most recent values of a score, for calibration and budgets."""

from __future__ import annotations

import numpy as np


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
