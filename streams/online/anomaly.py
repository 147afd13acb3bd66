"""Unsupervised anomaly score on every transaction: river's HalfSpaceTrees.

Cost decides the size (MEASUREMENTS.md): 25 trees of height 15 run at ~640 tx/s, 10×8 at
~53k/s score+learn, 5×6 at ~150k/s on four features. The default is 5 trees of height 6 over four
card-behaviour features with fixed limits (so no scaler runs per transaction), learning on every
``learn_every``-th transaction.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from river import anomaly

from streams.features.names import MODEL_FEATURES
from streams.online.window import RecentValues

# feature -> (low, high) limits for the trees; values outside are clipped by river's splits.
ANOMALY_INPUTS: dict[str, tuple[float, float]] = {
    "TX_AMOUNT": (0.0, 300.0),
    "CARD_AMOUNT_RATIO_30DAY": (0.0, 6.0),
    "CARD_NB_TX_1HOUR_WINDOW": (0.0, 6.0),
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW": (0.0, 12.0),
}
LIMITS: dict[Hashable, tuple[float, float]] = {k: v for k, v in ANOMALY_INPUTS.items()}
_INDEX = [(name, MODEL_FEATURES.index(name)) for name in ANOMALY_INPUTS]


class AnomalyScorer:
    def __init__(
        self,
        n_trees: int = 3,
        height: int = 6,
        learn_every: int = 4,
        seed: int = 42,
        calibration_window: int = 50_000,
    ):
        self.model = anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=250,
            limits=LIMITS,
            seed=seed,
        )
        self.learn_every = max(1, learn_every)
        self._seen = 0
        self._recent = RecentValues(calibration_window)

    def percentile(self, raw: np.ndarray) -> np.ndarray:
        """Calibrate raw HalfSpaceTrees scores (whose scale depends on the data and the tree
        size) into their rank among the last ``calibration_window`` scores: 0.999 means more
        anomalous than 99.9 % of recent traffic, whatever the trees' raw range."""
        ranks = self._recent.rank(raw)
        self._recent.add(raw)
        return ranks

    def score_and_learn(self, rows: list[list[float]]) -> list[float]:
        """Score each row (MODEL_FEATURES order) before learning from it; 0 = normal, 1 = odd."""
        score_one, learn_one = self.model.score_one, self.model.learn_one
        every, seen = self.learn_every, self._seen
        scores = []
        for row in rows:
            x = {name: row[i] for name, i in _INDEX}
            scores.append(score_one(x))
            seen += 1
            if seen % every == 0:
                learn_one(x)
        self._seen = seen
        return scores
