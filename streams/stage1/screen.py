"""Stage 1 as a pure function of a micro-batch: features, online scores, rules, flag decision.

The Kafka worker, ``replay``, ``rules backtest``, ``train`` and ``evaluate`` all call
``Screener.screen``; none has a second implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from streams.features.engine import FeatureEngine
from streams.features.names import DAY_MS, MODEL_FEATURES
from streams.online.anomaly import AnomalyScorer
from streams.online.supervised import OnlineClassifier
from streams.rules.model import RuleSet
from streams.schema import Transaction
from streams.settings import Settings
from streams.stage1.policy import FlagPolicy


@dataclass
class ScreenedBatch:
    txs: list[Transaction]
    X: np.ndarray  # features, MODEL_FEATURES order
    anomaly: np.ndarray
    probability: np.ndarray
    rule_score: np.ndarray
    stage1_score: np.ndarray
    flagged: np.ndarray  # bool
    fired: list[list[str]]
    reasons: list[list[str]]
    shadow_fired: list[list[str]]
    hits: dict[str, int]
    rules_version: str

    def flagged_record(self, i: int) -> dict[str, Any]:
        """What stage 1 sends to stage 2 for a forwarded transaction."""
        tx = self.txs[i]
        return {
            "transaction_id": tx.transaction_id,
            "card_id": tx.card_id,
            "terminal_id": tx.terminal_id,
            "amount": tx.amount,
            "ts_ms": tx.ts_ms,
            "features": dict(zip(MODEL_FEATURES, self.X[i].tolist(), strict=True)),
            "stage1": self.evidence(i),
            "transaction": tx.raw,
        }

    def evidence(self, i: int) -> dict[str, Any]:
        return {
            "rules_version": self.rules_version,
            "rules_fired": self.fired[i],
            "reasons": self.reasons[i],
            "shadow_rules_fired": self.shadow_fired[i],
            "anomaly_score": round(float(self.anomaly[i]), 6),
            "fraud_probability": round(float(self.probability[i]), 6),
            "rule_score": float(self.rule_score[i]),
            "score": round(float(self.stage1_score[i]), 6),
        }

    def approve_decision(self, i: int) -> dict[str, Any]:
        """The stage-1 decision for a transaction that is not forwarded."""
        tx = self.txs[i]
        return {
            "transaction_id": tx.transaction_id,
            "card_id": tx.card_id,
            "action": "approve",
            "score": round(float(self.stage1_score[i]), 6),
            "stage": 1,
            "rules_version": self.rules_version,
            "model_version": None,
            "rules": self.fired[i],
            "rule_reasons": self.reasons[i],
            "reasons": [],
            "stage1": self.evidence(i),
        }


def rule_frame(
    X: np.ndarray, txs_ts: np.ndarray, anomaly: np.ndarray, prob: np.ndarray
) -> pl.DataFrame:
    """The frame rules are evaluated on: features, online scores, hour and weekday."""
    frame = pl.DataFrame(X, schema=MODEL_FEATURES, orient="row")
    return frame.with_columns(
        pl.Series("ANOMALY_SCORE", anomaly),
        pl.Series("FRAUD_PROBABILITY", prob),
        pl.Series("TX_HOUR", (txs_ts % DAY_MS) // 3_600_000).cast(pl.Float64),
        pl.Series("TX_WEEKDAY", (txs_ts // DAY_MS + 3) % 7).cast(pl.Float64),
    )


class Screener:
    def __init__(
        self,
        rules: RuleSet,
        policy: FlagPolicy,
        engine: FeatureEngine | None = None,
        anomaly: AnomalyScorer | None = None,
        classifier: OnlineClassifier | None = None,
    ):
        self.rules = rules
        self.policy = policy
        self.engine = engine or FeatureEngine()
        self.anomaly = anomaly or AnomalyScorer()
        self.classifier = classifier or OnlineClassifier()

    @classmethod
    def from_settings(cls, settings: Settings, rules: RuleSet) -> Screener:
        return cls(
            rules,
            FlagPolicy.from_settings(settings),
            anomaly=AnomalyScorer(
                settings.anomaly_trees, settings.anomaly_height, settings.anomaly_learn_every
            ),
            classifier=OnlineClassifier(cache_size=settings.label_cache_size),
        )

    def screen(
        self, txs: list[Transaction], terminal_labels: list[int] | None = None
    ) -> ScreenedBatch:
        """Screen a micro-batch in order. ``terminal_labels`` (offline replays of labelled
        history only) feeds each transaction's label to the terminal table right after it; the
        table's delay filter keeps it unseen for 7 days, as when it comes from the labels topic."""
        transform, add_label = self.engine.transform, self.engine.add_label
        rows = []
        for i, tx in enumerate(txs):
            rows.append(transform(tx.card_id, tx.terminal_id, tx.amount, tx.ts_ms))
            if terminal_labels is not None:
                add_label(tx.terminal_id, tx.ts_ms, terminal_labels[i])
        X = np.array(rows, dtype=np.float64).reshape(len(rows), len(MODEL_FEATURES))
        anomaly = self.anomaly.percentile(np.array(self.anomaly.score_and_learn(rows)))
        prob = self.classifier.predict_batch(X)
        self.classifier.remember([tx.transaction_id for tx in txs], X)
        ts = np.fromiter((tx.ts_ms for tx in txs), dtype=np.int64, count=len(txs))
        result = self.rules.evaluate(rule_frame(X, ts, anomaly, prob))
        flagged = self.policy.flag(result.flag, prob, anomaly)
        return ScreenedBatch(
            txs=txs,
            X=X,
            anomaly=anomaly,
            probability=prob,
            rule_score=result.score,
            stage1_score=self.policy.stage1_score(result.score, prob, flagged),
            flagged=flagged,
            fired=result.fired,
            reasons=result.reasons,
            shadow_fired=result.shadow_fired,
            hits=result.hits,
            rules_version=self.rules.version,
        )

    def learn_label(self, transaction_id: str, terminal: str, ts_ms: int, fraud: int) -> None:
        """A label from the labels topic: terminal risk table and the online classifier."""
        self.engine.add_label(terminal, ts_ms, fraud)
        self.classifier.learn_label(transaction_id, bool(fraud))
