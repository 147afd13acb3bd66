"""Stage 1 as a pure function of a micro-batch: features, online scores, rules, flag decision.

The Kafka worker, ``replay``, ``rules backtest``, ``train`` and ``evaluate`` all call
``Screener.screen``; none has a second implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from streams.features.engine import FeatureEngine
from streams.features.names import DAY_MS, MODEL_FEATURES, RULE_FIELDS
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
    # card ids in outputs: a keyed pseudonym when FRAUD_PSEUDONYMIZE_KEY is set (streams.privacy)
    card_out: Callable[[str], str] = str
    # per-row Python values of the score arrays, rounded as they are published (built once)
    _published: tuple[list[float], list[float], list[float], list[float]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _values(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """(anomaly, probability, rule score, stage-1 score) per row, as published."""
        if self._published is None:
            self._published = (
                [round(v, 6) for v in self.anomaly.tolist()],
                [round(v, 6) for v in self.probability.tolist()],
                self.rule_score.astype(np.float64).tolist(),
                [round(v, 6) for v in self.stage1_score.tolist()],
            )
        return self._published

    def flagged_record(self, i: int) -> dict[str, Any]:
        """What stage 1 sends to stage 2 for a forwarded transaction."""
        tx = self.txs[i]
        return {
            "transaction_id": tx.transaction_id,
            "card_id": self.card_out(tx.card_id),
            "terminal_id": tx.terminal_id,
            "amount": tx.amount,
            "ts_ms": tx.ts_ms,
            "features": dict(zip(MODEL_FEATURES, self.X[i].tolist(), strict=True)),
            "stage1": self.evidence(i),
            "transaction": tx.raw,
        }

    def evidence(self, i: int) -> dict[str, Any]:
        anomaly, probability, rule_score, score = self._values()
        return {
            "rules_version": self.rules_version,
            "rules_fired": self.fired[i],
            "reasons": self.reasons[i],
            "shadow_rules_fired": self.shadow_fired[i],
            "anomaly_score": anomaly[i],
            "fraud_probability": probability[i],
            "rule_score": rule_score[i],
            "score": score[i],
        }

    def approve_decision(self, i: int) -> dict[str, Any]:
        """The stage-1 decision for a transaction that is not forwarded."""
        tx = self.txs[i]
        anomaly, probability, rule_score, score = self._values()
        fired, reasons = self.fired[i], self.reasons[i]
        return {
            "transaction_id": tx.transaction_id,
            "card_id": self.card_out(tx.card_id),
            "action": "approve",
            "score": score[i],
            "stage": 1,
            "rules_version": self.rules_version,
            "model_version": None,
            "rules": fired,
            "rule_reasons": reasons,
            "reasons": [],
            "stage1": {  # evidence(i), inlined: this runs for nearly every transaction
                "rules_version": self.rules_version,
                "rules_fired": fired,
                "reasons": reasons,
                "shadow_rules_fired": self.shadow_fired[i],
                "anomaly_score": anomaly[i],
                "fraud_probability": probability[i],
                "rule_score": rule_score[i],
                "score": score[i],
            },
        }


# rule_frame fills the columns by position
_AFTER_FEATURES = ("ANOMALY_SCORE", "FRAUD_PROBABILITY", "TX_HOUR", "TX_WEEKDAY")
if tuple(RULE_FIELDS) != (*MODEL_FEATURES, *_AFTER_FEATURES):  # pragma: no cover
    raise ImportError("rule_frame does not know the order of RULE_FIELDS")


def rule_frame(
    X: np.ndarray,
    txs_ts: np.ndarray,
    anomaly: np.ndarray,
    prob: np.ndarray,
    fields: Collection[str] | None = None,
) -> pl.DataFrame:
    """The frame rules are evaluated on: features, online scores, hour and weekday (only the
    ``fields`` given, in RULE_FIELDS order, when a rule set names fewer than all)."""
    columns = np.empty((len(RULE_FIELDS), len(X)), dtype=np.float64)  # one column per field
    columns[: X.shape[1]] = X.T
    columns[X.shape[1]] = anomaly
    columns[X.shape[1] + 1] = prob
    columns[X.shape[1] + 2] = (txs_ts % DAY_MS) // 3_600_000
    columns[X.shape[1] + 3] = (txs_ts // DAY_MS + 3) % 7
    keep = [i for i, name in enumerate(RULE_FIELDS) if fields is None or name in fields]
    # one Series per column: a one-column 2-D from_numpy would become a single array cell
    return pl.DataFrame([pl.Series(RULE_FIELDS[i], columns[i]) for i in keep or range(1)])


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
        self.card_out: Callable[[str], str] = str

    @classmethod
    def from_settings(cls, settings: Settings, rules: RuleSet) -> Screener:
        """The configured screener, with batch-independent calibrations (every path, live or
        offline, gets the same scores whatever its batch boundaries)."""
        from streams.privacy import Pseudonymizer
        from streams.recovery.calibration import make_batch_independent

        pseudonymizer = Pseudonymizer(settings.pseudonymize_key)
        screener = make_batch_independent(
            cls(
                rules,
                FlagPolicy.from_settings(settings),
                anomaly=AnomalyScorer(
                    settings.anomaly_trees, settings.anomaly_height, settings.anomaly_learn_every
                ),
                classifier=OnlineClassifier(cache_size=settings.label_cache_size),
            )
        )
        if pseudonymizer.enabled:
            screener.card_out = pseudonymizer
        return screener

    def screen(
        self, txs: list[Transaction], terminal_labels: list[int] | None = None
    ) -> ScreenedBatch:
        """Screen a micro-batch in order. ``terminal_labels`` (offline replays of labelled
        history only) feeds each transaction's label to the terminal table right after it; the
        table's delay filter keeps it unseen for 7 days, as when it comes from the labels topic."""
        n = len(txs)
        flat: list[float] = []
        into = self.engine.transform_into
        if terminal_labels is None:
            for tx in txs:
                into(tx.card_id, tx.terminal_id, tx.amount, tx.ts_ms, flat)
        else:
            add_label = self.engine.add_label
            for tx, label in zip(txs, terminal_labels, strict=True):
                into(tx.card_id, tx.terminal_id, tx.amount, tx.ts_ms, flat)
                add_label(tx.terminal_id, tx.ts_ms, label)
        # fromiter: the same values as np.array(flat), a third faster for a list of floats
        X = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(n, len(MODEL_FEATURES))
        anomaly = self.anomaly.percentile(self.anomaly.score_and_learn(X))
        prob = self.classifier.predict_batch(X)
        self.classifier.remember([tx.transaction_id for tx in txs], X)
        ts = np.fromiter((tx.ts_ms for tx in txs), dtype=np.int64, count=n)
        rules = self.rules
        result = rules.evaluate(rule_frame(X, ts, anomaly, prob, rules.plan.fields))
        flagged = self.policy.flag(result.flag, prob, anomaly)
        return ScreenedBatch(
            card_out=self.card_out,
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
