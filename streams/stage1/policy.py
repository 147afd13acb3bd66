"""The stage-1 flag policy: forward when a flag rule fires or an online score is high."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.settings import Settings


@dataclass(frozen=True)
class FlagPolicy:
    probability_threshold: float = 0.5
    anomaly_threshold: float = 0.995

    @classmethod
    def from_settings(cls, settings: Settings) -> FlagPolicy:
        return cls(settings.flag_probability_threshold, settings.flag_anomaly_threshold)

    def flag(
        self, rule_flag: np.ndarray, probability: np.ndarray, anomaly: np.ndarray
    ) -> np.ndarray:
        return (
            rule_flag
            | (probability >= self.probability_threshold)
            | (anomaly >= self.anomaly_threshold)
        )

    @staticmethod
    def stage1_score(rule_score: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """One number per transaction to rank what stage 1 did not forward."""
        return np.maximum(rule_score, probability)
