"""Population stability index (PSI) of a stream signal: the latest window against a reference.

PSI = Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ), where eᵢ and aᵢ are the shares of the reference and of the current
window in bin (or category) i; shares are floored at ``epsilon`` so an empty bin counts as a large
but finite change. Usual reading: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.

The reference is the first ``reference_size`` observations, or one given with ``set_reference``;
the window is the last ``window_size`` observations after it (a ring buffer of bin indices, so an
observation costs a vectorised ``searchsorted``, not a Python loop). Pure: no clock, no metrics.

>>> m = CategoricalPsiMonitor(reference_size=4, window_size=4)
>>> m.observe_many(["a", "b", "a", "b", "a", "b", "a", "b"])
>>> m.psi()
0.0
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def psi_from_counts(
    reference: Sequence[float] | FloatArray,
    current: Sequence[float] | FloatArray,
    epsilon: float = 1e-4,
) -> float:
    """PSI of two histograms over the same bins (counts or shares; each is normalised)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"histograms differ in length: {ref.shape} vs {cur.shape}")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("PSI needs a non-empty reference and current histogram")
    e = np.maximum(ref / ref.sum(), epsilon)
    a = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


class _WindowedPsi:
    """Reference counts plus a ring buffer of the last ``window_size`` bin indices."""

    def __init__(
        self, reference_size: int, window_size: int, min_window: int | None, epsilon: float
    ) -> None:
        if reference_size < 1 or window_size < 1:
            raise ValueError("reference_size and window_size must be at least 1")
        self.reference_size = reference_size
        self.window_size = window_size
        self.min_window = (
            window_size if min_window is None else max(1, min(min_window, window_size))
        )
        self.epsilon = epsilon
        self._ring: IntArray = np.zeros(window_size, dtype=np.int64)
        self._pos = 0
        self._count = 0
        self._ref_counts: FloatArray = np.zeros(0, dtype=np.float64)

    @property
    def reference_ready(self) -> bool:
        return bool(self._ref_counts.sum() > 0) and self._reference_complete()

    @property
    def window_count(self) -> int:
        """Observations currently in the window."""
        return self._count

    def _reference_complete(self) -> bool:  # overridden
        return True

    def _clear_window(self) -> None:
        self._pos = 0
        self._count = 0

    def _push(self, idx: IntArray) -> None:
        n = len(idx)
        if n == 0:
            return
        size = self.window_size
        if n >= size:
            self._ring[:] = idx[-size:]
            self._pos = 0
            self._count = size
            return
        end = self._pos + n
        if end <= size:
            self._ring[self._pos : end] = idx
        else:
            first = size - self._pos
            self._ring[self._pos :] = idx[:first]
            self._ring[: n - first] = idx[first:]
        self._pos = end % size
        self._count = min(size, self._count + n)

    def _window_counts(self, nbins: int) -> FloatArray:
        # Writes start at 0 after a clear, so until the ring wraps the live part is its head.
        live = self._ring[: self._count]
        return np.bincount(live, minlength=nbins).astype(np.float64)

    def psi(self) -> float | None:
        """PSI of the window against the reference; None until both hold enough observations."""
        if not self.reference_ready or self._count < self.min_window:
            return None
        ref = self._ref_counts
        cur = self._window_counts(len(ref))
        if len(cur) > len(ref):  # categories first seen in the window
            ref = np.concatenate([ref, np.zeros(len(cur) - len(ref))])
        return psi_from_counts(ref, cur, self.epsilon)


class PsiMonitor(_WindowedPsi):
    """PSI of a numeric signal (a score, a latency), binned on the reference's quantiles.

    ``edges`` fixes the inner bin edges instead (e.g. ``[0.1, 0.2, ..., 0.9]`` for a probability);
    otherwise they are the reference's ``bins``-quantiles, merged where the reference has ties, with
    the outer bins open so a window beyond the reference's range is still seen as a shift.
    """

    def __init__(
        self,
        reference_size: int = 10_000,
        window_size: int = 10_000,
        bins: int = 10,
        *,
        edges: Sequence[float] | None = None,
        min_window: int | None = None,
        epsilon: float = 1e-4,
    ) -> None:
        super().__init__(reference_size, window_size, min_window, epsilon)
        if bins < 2:
            raise ValueError("bins must be at least 2")
        self.bins = bins
        self._fixed_edges = None if edges is None else np.asarray(sorted(edges), dtype=np.float64)
        self._edges: FloatArray | None = None
        self._ref_buffer: list[FloatArray] = []
        self._ref_filled = 0

    @property
    def edges(self) -> FloatArray | None:
        """The inner bin edges in use (None before the reference is complete)."""
        return self._edges

    def _reference_complete(self) -> bool:
        return self._edges is not None

    def reset(self) -> None:
        """Forget reference and window (after a model or rule change): relearn from what comes."""
        self._edges = None
        self._ref_buffer = []
        self._ref_filled = 0
        self._ref_counts = np.zeros(0, dtype=np.float64)
        self._clear_window()

    def set_reference(self, values: Iterable[float] | FloatArray) -> None:
        """Use these values as the reference (replacing any), and start a fresh window."""
        ref = _finite(values)
        if len(ref) == 0:
            raise ValueError("empty reference")
        self._freeze(ref)
        self._clear_window()

    def _freeze(self, ref: FloatArray) -> None:
        if self._fixed_edges is not None:
            edges = self._fixed_edges
        else:
            qs = np.linspace(0.0, 1.0, self.bins + 1)[1:-1]
            edges = np.unique(np.quantile(ref, qs))
        self._edges = edges
        idx = np.searchsorted(edges, ref, side="left")
        self._ref_counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
        self._ref_buffer = []
        self._ref_filled = len(ref)

    def observe(self, value: float) -> None:
        self.observe_many(np.array([value], dtype=np.float64))

    def observe_many(self, values: Iterable[float] | FloatArray) -> None:
        """Add observations: to the reference until it is complete, then to the window."""
        arr = _finite(values)
        if self._edges is None:
            need = self.reference_size - self._ref_filled
            self._ref_buffer.append(arr[:need])
            self._ref_filled += len(arr[:need])
            arr = arr[need:]
            if self._ref_filled < self.reference_size:
                return
            self._freeze(np.concatenate(self._ref_buffer))
        assert self._edges is not None
        self._push(np.searchsorted(self._edges, arr, side="left").astype(np.int64))


class CategoricalPsiMonitor(_WindowedPsi):
    """PSI of a categorical signal (decision mix, flagged or not), one bin per category."""

    def __init__(
        self,
        reference_size: int = 10_000,
        window_size: int = 10_000,
        *,
        min_window: int | None = None,
        epsilon: float = 1e-4,
        seed: int = 0,
    ) -> None:
        super().__init__(reference_size, window_size, min_window, epsilon)
        self._index: dict[Hashable, int] = {}
        self._frozen = False
        self._rng = np.random.default_rng(seed)

    @property
    def categories(self) -> list[Hashable]:
        return list(self._index)

    def _reference_complete(self) -> bool:
        return self._frozen

    def reset(self) -> None:
        self._frozen = False
        self._ref_counts = np.zeros(len(self._index), dtype=np.float64)
        self._clear_window()

    def share(self, category: Hashable) -> float:
        """Share of ``category`` in the current window (0.0 for an empty window)."""
        i = self._index.get(category)
        if i is None or self._count == 0:
            return 0.0
        return float(np.count_nonzero(self._ring[: self._count] == i)) / self._count

    def _ids(self, values: Iterable[Hashable]) -> IntArray:
        index = self._index
        out = []
        for v in values:
            i = index.get(v)
            if i is None:
                i = index[v] = len(index)
            out.append(i)
        return np.asarray(out, dtype=np.int64)

    def set_reference(self, values: Iterable[Hashable] | Mapping[Any, int]) -> None:
        """Use these values (or ``{category: count}``) as the reference; start a fresh window."""
        if isinstance(values, Mapping):
            ids = self._ids(values.keys())
            counts = np.zeros(len(self._index), dtype=np.float64)
            np.add.at(counts, ids, np.asarray(list(values.values()), dtype=np.float64))
        else:
            counts = np.bincount(self._ids(values), minlength=len(self._index)).astype(np.float64)
        if counts.sum() <= 0:
            raise ValueError("empty reference")
        self._ref_counts = counts
        self._frozen = True
        self._clear_window()

    def observe_many(self, values: Iterable[Hashable]) -> None:
        self._add(self._ids(values))

    def observe_counts(self, counts: Mapping[Any, int]) -> None:
        """Add a batch given as ``{category: count}`` (cheaper than one value per observation).

        The batch is shuffled with the monitor's own seeded generator, so that a batch split
        between reference and window, or partly pushed out of the window, keeps its mix.
        """
        ids = self._ids(counts.keys())
        arr = np.repeat(ids, np.asarray([max(0, int(c)) for c in counts.values()], dtype=np.int64))
        self._rng.shuffle(arr)
        self._add(arr)

    def _add(self, ids: IntArray) -> None:
        if len(self._ref_counts) < len(self._index):
            grown = np.zeros(len(self._index), dtype=np.float64)
            grown[: len(self._ref_counts)] = self._ref_counts
            self._ref_counts = grown
        if not self._frozen:
            need = self.reference_size - int(self._ref_counts.sum())
            head, ids = ids[:need], ids[need:]
            self._ref_counts += np.bincount(head, minlength=len(self._index))
            if int(self._ref_counts.sum()) < self.reference_size:
                return
            self._frozen = True
        self._push(ids)


def _finite(values: Iterable[float] | FloatArray) -> FloatArray:
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    arr = arr.ravel()
    return arr[np.isfinite(arr)]
