"""Unsupervised anomaly score on every transaction: river's HalfSpaceTrees, run per batch.

The trees are river's own (``river.tree.padded.make_padded_tree`` with the seed's random
generator, exactly as ``HalfSpaceTrees.learn_one`` builds them), kept as arrays in heap order
(node k has children 2k+1, 2k+2). Scoring and learning follow river's ``score_one`` and
``learn_one`` to the bit, one micro-batch at a time:

- a score reads only the reference masses (``r_mass``), which change only when a window of
  ``window_size`` learnt rows closes; within a run of rows between two such pivots every score is
  one vectorised walk, and every learnt row adds one to the ``l_mass`` of each node on its path;
- each row is scored before it is learnt, every ``learn_every``-th row is learnt, and scores are 0
  until the first window has closed, as river's.

``tests/unit/test_online_anomaly.py`` checks equality with river's ``score_one``/``learn_one``.
Cost (MEASUREMENTS.md): river's per-row walk of 3 trees of height 6 ran at ~60k rows/s and was the
largest single cost of stage 1; the batch walk costs well under a microsecond a row. The size stays
3 trees of height 6 over four card-behaviour features with fixed limits (no scaler per row),
learning on every 4th transaction.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
from river.tree.padded import PaddedBranch, PaddedLeaf, make_padded_tree

from streams.errors import StateError
from streams.features.names import MODEL_FEATURES
from streams.online.window import CheckpointedValues

if TYPE_CHECKING:
    from streams.checkpoint.codec import StateReader, StateWriter

# feature -> (low, high) limits for the trees; values outside are clipped by river's splits.
ANOMALY_INPUTS: dict[str, tuple[float, float]] = {
    "TX_AMOUNT": (0.0, 300.0),
    "CARD_AMOUNT_RATIO_30DAY": (0.0, 6.0),
    "CARD_NB_TX_1HOUR_WINDOW": (0.0, 6.0),
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW": (0.0, 12.0),
}
_NAMES = sorted(ANOMALY_INPUTS)  # river builds its trees over sorted(x)
_COLUMNS = np.array([MODEL_FEATURES.index(name) for name in _NAMES], dtype=np.intp)
WINDOW_SIZE = 250
_PADDING = 0.15  # river's


def _flatten(root: PaddedBranch | PaddedLeaf, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(input column, threshold) of each branch node of a complete tree, in heap order."""
    branches = 2**height - 1
    feature = np.zeros(branches, dtype=np.intp)
    threshold = np.zeros(branches, dtype=np.float64)
    level: list[PaddedBranch | PaddedLeaf] = [root]
    k = 0
    for _ in range(height):
        below: list[PaddedBranch | PaddedLeaf] = []
        for node in level:
            assert isinstance(node, PaddedBranch)
            feature[k] = _NAMES.index(node.feature)
            threshold[k] = node.threshold
            below += node.children
            k += 1
        level = below
    return feature, threshold


class AnomalyScorer:
    def __init__(
        self,
        n_trees: int = 3,
        height: int = 6,
        learn_every: int = 4,
        seed: int = 42,
        calibration_window: int = 50_000,
    ):
        self.n_trees = n_trees
        self.height = height
        self.window_size = WINDOW_SIZE
        self.learn_every = max(1, learn_every)
        rng = random.Random(seed)  # river's HalfSpaceTrees(seed=seed).rng
        trees = [
            make_padded_tree(
                limits={name: ANOMALY_INPUTS[name] for name in _NAMES},
                height=height,
                padding=_PADDING,
                rng=rng,
                r_mass=0,
                l_mass=0,
            )
            for _ in range(n_trees)
        ]
        flat = [_flatten(tree, height) for tree in trees]
        self._feature = np.stack([f for f, _ in flat])  # (trees, branches)
        self._threshold = np.stack([t for _, t in flat])
        nodes = 2 ** (height + 1) - 1
        self.l_mass = np.zeros((n_trees, nodes), dtype=np.int64)
        self.r_mass = np.zeros((n_trees, nodes), dtype=np.int64)
        self._weights = (2 ** np.arange(height + 1, dtype=np.int64))[:, None]  # 2**depth
        self._first_branch = (np.arange(n_trees, dtype=np.intp) * (2**height - 1))[:, None]
        self._first_node = (np.arange(n_trees, dtype=np.intp) * nodes)[:, None]
        self._size_limit = 0.1 * self.window_size
        self._max_score = n_trees * self.window_size * (2 ** (height + 1) - 1)
        self._first_window = True
        self._counter = 0  # rows learnt in the current window
        self._seen = 0  # rows scored so far
        self._recent = CheckpointedValues(calibration_window)

    def save_state(self, w: StateWriter, name: str) -> None:
        """The trees (their splits, so a river upgrade cannot change them) and masses."""
        for field in ("_feature", "_threshold", "l_mass", "r_mass"):
            w.numpy(f"{name}.{field}", getattr(self, field))
        w.meta[name] = [self._first_window, self._counter, self._seen]
        self._recent.save_state(w, f"{name}.recent")

    def load_state(self, r: StateReader, name: str) -> None:
        for field in ("_feature", "_threshold", "l_mass", "r_mass"):
            value = r.numpy(f"{name}.{field}")
            if value.shape != getattr(self, field).shape:
                raise StateError(f"{name}: trees of another size ({field} {value.shape})")
            setattr(self, field, value)
        self._first_window, self._counter, self._seen = r.meta[name]
        self._recent.load_state(r, f"{name}.recent")

    def percentile(self, raw: np.ndarray) -> np.ndarray:
        """Calibrate raw HalfSpaceTrees scores (whose scale depends on the data and the tree
        size) into their rank among the last ``calibration_window`` scores: 0.999 means more
        anomalous than 99.9 % of recent traffic, whatever the trees' raw range.

        Call it right after ``score_and_learn`` on the same rows. Until the trees have learnt
        two full windows (``warmup`` rows) their scores move with every window, so those rows
        get 0 and stay out of the reference: otherwise the first real scores would all rank at
        the top and flood stage 2 after every start or partition rebuild."""
        n = len(raw)
        first = self._seen - n  # stream position of raw[0], 0-based
        skip = min(n, max(0, self.warmup - first))
        ranks = np.zeros(n)
        if skip < n:
            ranks[skip:] = self._recent.rank(raw[skip:])
            self._recent.add(raw[skip:])
        return ranks

    @property
    def warmup(self) -> int:
        return 2 * self.window_size * self.learn_every

    def _paths(self, Z: np.ndarray) -> np.ndarray:
        """(trees, height + 1, rows) node index at each depth; ``Z`` is (inputs, rows).

        All trees walk together: one gather per level over (trees, rows) arrays."""
        n = Z.shape[1]
        values = Z.ravel()
        at = np.arange(n)
        first = (
            self._first_branch
        )  # (trees, 1): where each tree's branches start in the flat arrays
        paths = np.zeros((self.n_trees, self.height + 1, n), dtype=np.intp)
        node = paths[:, 0]
        for depth in range(1, self.height + 1):
            branch = first + node
            value = values[self._feature.ravel()[branch] * n + at]
            # river: left (2k+1) when value < threshold, else right (2k+2); NaN goes right
            node = 2 * node + 2 - (value < self._threshold.ravel()[branch])
            paths[:, depth] = node
        return paths

    def _scores(self, paths: np.ndarray) -> np.ndarray:
        """river's ``score_one`` for every row of ``paths`` with the current reference masses."""
        mass = self.r_mass.ravel()[self._first_node[:, :, None] + paths]  # (trees, depth, rows)
        # a level counts while every level above it had at least size_limit reference mass
        alive = np.ones(mass.shape, dtype=np.bool_)
        np.logical_and.accumulate(mass[:, :-1] >= self._size_limit, axis=1, out=alive[:, 1:])
        total = (mass * self._weights * alive).sum(axis=(0, 1))
        return 1.0 - total / self._max_score

    def score_and_learn(self, X: np.ndarray) -> np.ndarray:
        """Score each row of ``X`` (MODEL_FEATURES columns) before learning from it; 0 = normal,
        1 = odd. Every ``learn_every``-th row seen is learnt."""
        n = len(X)
        scores = np.zeros(n, dtype=np.float64)
        if n == 0:
            return scores
        paths = self._paths(np.ascontiguousarray(X[:, _COLUMNS].T))
        seen = self._seen + np.arange(1, n + 1)
        learnt = np.flatnonzero(seen % self.learn_every == 0)
        self._seen += n
        start = 0  # rows [start, end) share one set of reference masses
        while start < n:
            todo = learnt[learnt >= start]
            until_pivot = self.window_size - self._counter
            if len(todo) >= until_pivot:  # the window closes after learning this row
                end = int(todo[until_pivot - 1]) + 1
                learn = todo[:until_pivot]
            else:
                end, learn = n, todo
            if not self._first_window:
                scores[start:end] = self._scores(paths[:, :, start:end])
            if len(learn):
                visited = (self._first_node[:, :, None] + paths[:, :, learn]).ravel()
                self.l_mass += np.bincount(visited, minlength=self.l_mass.size).reshape(
                    self.l_mass.shape
                )
                self._counter += len(learn)
            if self._counter == self.window_size:  # river's pivot
                self.r_mass = self.l_mass
                self.l_mass = np.zeros_like(self.r_mass)
                self._first_window = False
                self._counter = 0
            start = end
        return scores
