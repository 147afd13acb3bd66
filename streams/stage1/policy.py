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
    def stage1_score(
        rule_score: np.ndarray, probability: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """One number per transaction, consistent with the flag: forwarded transactions score
        in [0.5, 1], the others in [0, 0.5), each ranked by its strongest rule or model signal."""
        strength = np.maximum(rule_score, probability)
        return np.where(flagged, 0.5 + 0.5 * strength, 0.5 * np.minimum(strength, 0.999999))
