"""The stage-1 flag policy: what is forwarded to stage 2.

A transaction is forwarded when an acting ``flag`` rule fires, when the online fraud
probability reaches an absolute threshold, when the anomaly score reaches its threshold, or —
the budget — when its online probability is among the top ``budget`` share of recent traffic.
The budget turns spare stage-2 capacity into recall without a hand-set probability cut-off,
which would drift as the online model learns. It is measured over a sliding window of the last
``window`` transactions, so a replay of the same stream gives the same decisions.
"""

from __future__ import annotations

import numpy as np

from streams.online.window import RecentValues
from streams.settings import Settings


class FlagPolicy:
    def __init__(
        self,
        probability_threshold: float = 0.5,
        anomaly_threshold: float = 0.995,
        budget: float = 0.0,
        window: int = 50_000,
    ):
        self.probability_threshold = probability_threshold
        self.anomaly_threshold = anomaly_threshold
        self.budget = budget
        self._recent = RecentValues(window)

    @classmethod
    def from_settings(cls, settings: Settings) -> FlagPolicy:
        return cls(
            settings.flag_probability_threshold,
            settings.flag_anomaly_threshold,
            settings.flag_budget,
        )

    def budget_threshold(self, probability: np.ndarray) -> float:
        """The probability that the top ``budget`` share of the window reaches (after adding
        this batch to the window); +inf while the window holds fewer than 1,000 values."""
        self._recent.add(probability)
        if self.budget <= 0 or len(self._recent) < 1000:
            return float("inf")
        return self._recent.quantile(1.0 - self.budget)

    def flag(
        self, rule_flag: np.ndarray, probability: np.ndarray, anomaly: np.ndarray
    ) -> np.ndarray:
        budget = self.budget_threshold(probability)
        return (
            rule_flag
            | (probability >= self.probability_threshold)
            | (probability > budget)  # strict: ties (e.g. an unlearned model's zeros) never flood
            | (anomaly >= self.anomaly_threshold)
        )

    @staticmethod
    def stage1_score(
        rule_score: np.ndarray, probability: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """One number per transaction, consistent with the flag: forwarded transactions score
        in [0.5, 1], the others in [0, 0.5), each ranked by its strongest rule or model signal."""
        strength = np.maximum(rule_score, probability)
        return np.where(flagged, 0.5 + 0.5 * strength, 0.5 * np.minimum(strength, 0.999999))
