"""The batch HalfSpaceTrees equals river's own, row by row (scores, trees, learning, pivots)."""

from __future__ import annotations

import numpy as np
import pytest
from river import anomaly

from streams.features.names import MODEL_FEATURES
from streams.online.anomaly import ANOMALY_INPUTS, WINDOW_SIZE, AnomalyScorer


def river_scores(X: np.ndarray, n_trees: int, height: int, learn_every: int, seed: int) -> list:
    model = anomaly.HalfSpaceTrees(
        n_trees=n_trees, height=height, window_size=WINDOW_SIZE, limits=ANOMALY_INPUTS, seed=seed
    )
    index = [(name, MODEL_FEATURES.index(name)) for name in ANOMALY_INPUTS]
    out = []
    for seen, row in enumerate(X.tolist(), start=1):
        x = {name: row[i] for name, i in index}
        out.append(model.score_one(x))
        if seen % learn_every == 0:
            model.learn_one(x)
    return out


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(n, len(MODEL_FEATURES)))
    for name, (low, high) in ANOMALY_INPUTS.items():
        X[:, MODEL_FEATURES.index(name)] = rng.uniform(low - 1, high * 1.2, size=n)
    X[rng.random(n) < 0.05, MODEL_FEATURES.index("TX_AMOUNT")] = 250.0  # ties with splits
    return X


@pytest.mark.parametrize(
    ("n_trees", "height", "learn_every", "batches"),
    [(3, 6, 4, [2000, 2000, 1000]), (5, 4, 1, [1, 7, 333, 250, 999, 1410]), (2, 8, 3, [4000])],
)
def test_equals_river_row_by_row(n_trees, height, learn_every, batches) -> None:
    X = rows(sum(batches), seed=n_trees)
    expected = river_scores(X, n_trees, height, learn_every, seed=42)
    scorer = AnomalyScorer(n_trees, height, learn_every, seed=42)
    got, start = [], 0
    for size in batches:
        got += scorer.score_and_learn(X[start : start + size]).tolist()
        start += size
    assert got == expected  # bit for bit
    assert any(s > 0 for s in got)  # windows closed: real scores, not only the first window's 0


def test_empty_batch() -> None:
    assert AnomalyScorer().score_and_learn(np.empty((0, len(MODEL_FEATURES)))).shape == (0,)
