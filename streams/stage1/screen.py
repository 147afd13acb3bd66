"""Stage 1 as a pure function of a micro-batch: features, online scores, rules, flag decision.

The Kafka worker, ``replay``, ``rules backtest``, ``train`` and ``evaluate`` all call
``Screener.screen``; none has a second implementation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from streams.features.engine import FeatureEngine
from streams.features.names import DAY_MS, MODEL_FEATURES, RULE_FIELDS
from streams.online.anomaly import AnomalyScorer
from streams.online.supervised import WARM_START_FILE, OnlineClassifier, card_key
from streams.output_schema import flagged_record, stage1_decision, stage1_evidence
from streams.rules.model import RuleSet
from streams.schema import Transaction
from streams.settings import Settings
from streams.stage1.policy import FlagPolicy


def round6(values: np.ndarray) -> list[float]:
    """``[round(v, 6) for v in values.tolist()]``, the same floats bit for bit, vectorised.

    ``round(v, 6)`` is the double nearest to ``k / 10**6``, ``k`` the exact ``v * 10**6`` rounded
    half to even; so is ``rint(v * 1e6) / 1e6`` (IEEE division is correctly rounded) whenever the
    float product rounds to the same ``k``: when it is not within 1e-6 of a half-integer (for
    ``|v| < 1000`` its error is below 1e-7). The other values (and NaN, infinities, large
    values) go through ``round`` itself.
    """
    v = np.asarray(values, dtype=np.float64)
    scaled = v * 1e6
    k = np.rint(scaled)
    out: list[float] = (k / 1e6).tolist()
    with np.errstate(invalid="ignore"):
        exact = (np.abs(np.abs(scaled - k) - 0.5) > 1e-6) & (np.abs(v) < 1e3)
    if not exact.all():
        source = v.tolist()
        for i in np.flatnonzero(~exact).tolist():
            out[i] = round(source[i], 6)
    return out


@dataclass
class ScreenedBatch:
    txs: list[Transaction]
    X: np.ndarray  # features, MODEL_FEATURES order
    anomaly: np.ndarray
    probability: np.ndarray
    rule_score: np.ndarray
    stage1_score: np.ndarray
    flagged: np.ndarray  # bool: forwarded to stage 2
    blocked: np.ndarray  # bool: declined at stage 1 by a `block` rule (never forwarded)
    allowed: np.ndarray  # bool: approved at stage 1 by an `allow` rule (never forwarded)
    review: np.ndarray  # bool: forwarded, and stage 2 must decide at least review
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
                round6(self.anomaly),
                round6(self.probability),
                self.rule_score.astype(np.float64).tolist(),
                round6(self.stage1_score),
            )
        return self._published

    def flagged_record(self, i: int) -> dict[str, Any]:
        """What stage 1 sends to stage 2 for a forwarded transaction."""
        tx = self.txs[i]
        return flagged_record(
            tx.transaction_id,
            self.card_out(tx.card_id),
            tx.terminal_id,
            tx.amount,
            tx.ts_ms,
            self.X[i].tolist(),
            self.evidence(i),
            "review" if self.review[i] else None,
            tx.raw,
        )

    def evidence(self, i: int) -> dict[str, Any]:
        anomaly, probability, rule_score, score = self._values()
        return stage1_evidence(
            self.rules_version,
            self.fired[i],
            self.reasons[i],
            self.shadow_fired[i],
            anomaly[i],
            probability[i],
            rule_score[i],
            score[i],
        )

    def decision(self, i: int) -> dict[str, Any]:
        """The stage-1 decision for a transaction that is not forwarded (approve, or decline
        when a `block` rule blocked it)."""
        tx = self.txs[i]
        anomaly, probability, rule_score, score = self._values()
        return stage1_decision(
            tx.transaction_id,
            self.card_out(tx.card_id),
            "decline" if self.blocked[i] else "approve",
            self.rules_version,
            self.fired[i],
            self.reasons[i],
            self.shadow_fired[i],
            anomaly[i],
            probability[i],
            rule_score[i],
            score[i],
        )


# rule_frame fills the columns by position
_AFTER_FEATURES = ("ANOMALY_SCORE", "FRAUD_PROBABILITY", "TX_HOUR", "TX_WEEKDAY")
POSTERIOR = MODEL_FEATURES.index("CARD_COMPROMISE_LOGIT")  # the flag policy ranks by it too
if tuple(RULE_FIELDS) != (*MODEL_FEATURES, *_AFTER_FEATURES):  # pragma: no cover
    raise ImportError("rule_frame does not know the order of RULE_FIELDS")


def rule_frame(
    X: np.ndarray,
    txs_ts: np.ndarray,
    anomaly: np.ndarray,
    prob: np.ndarray,
    fields: Collection[str] | None = None,
    inputs: Sequence[pl.Series] = (),
) -> pl.DataFrame:
    """The frame rules are evaluated on: features, online scores, hour and weekday (only the
    ``fields`` given, in RULE_FIELDS order, when a rule set names fewer than all), then the
    attribute and list columns ``inputs`` (``RuleSet.input_columns``)."""
    columns = np.empty((len(RULE_FIELDS), len(X)), dtype=np.float64)  # one column per field
    columns[: X.shape[1]] = X.T
    columns[X.shape[1]] = anomaly
    columns[X.shape[1] + 1] = prob
    columns[X.shape[1] + 2] = (txs_ts % DAY_MS) // 3_600_000
    columns[X.shape[1] + 3] = (txs_ts // DAY_MS + 3) % 7
    keep = [i for i, name in enumerate(RULE_FIELDS) if fields is None or name in fields]
    # one Series per column: a one-column 2-D from_numpy would become a single array cell
    return pl.DataFrame(
        [pl.Series(RULE_FIELDS[i], columns[i]) for i in keep or range(1)] + list(inputs)
    )


@dataclass
class Scored:
    """Transactions with their features and online scores (``Screener.score``): what the
    rules and the flag policy judge (``judge``)."""

    txs: list[Transaction]
    X: np.ndarray
    ts: np.ndarray
    anomaly: np.ndarray
    probability: np.ndarray
    slots: np.ndarray  # where the classifier keeps each row for its label (``remember``)
    # the forward budget when the rows were scored: labels released before a later segment of
    # the same poll may move it before the rules and the policy judge this one
    budget: float


def judge(parts: Sequence[tuple[Screener, Scored]]) -> ScreenedBatch:
    """Rules, flag decision and stage-1 score of scored batches, as one batch in the order
    given. Each part is decided by its own screener's flag policy (in order: the policy keeps a
    window of recent probabilities); the rules, a row-wise function, judge every row in one
    evaluation when the screeners share a rule set (else one evaluation per part)."""
    first = parts[0][0]
    rules = first.rules
    if len(parts) == 1:
        scored = parts[0][1]
        txs, X, ts = scored.txs, scored.X, scored.ts
        anomaly, prob = scored.anomaly, scored.probability
    elif any(
        s.rules is not rules
        or s.card_out is not first.card_out
        or s.allow_beats_block != first.allow_beats_block
        for s, _ in parts
    ):
        return merge_batches([judge([part]) for part in parts])
    else:
        txs = [tx for _, scored in parts for tx in scored.txs]
        X = np.concatenate([scored.X for _, scored in parts])
        ts = np.concatenate([scored.ts for _, scored in parts])
        anomaly = np.concatenate([scored.anomaly for _, scored in parts])
        prob = np.concatenate([scored.probability for _, scored in parts])
    inputs = rules.input_columns(txs, ts)
    result = rules.evaluate(rule_frame(X, ts, anomaly, prob, rules.plan.fields, inputs))
    verdict = result.settle(first.allow_beats_block)
    decided = verdict.block | verdict.allow
    flags, scores = [], []
    start = 0
    for screener, scored in parts:
        end = start + len(scored.txs)
        part_flagged, share = screener.policy.flag(
            verdict.forward[start:end],
            scored.probability,
            scored.anomaly,
            scored.budget,
            exclude=decided[start:end],
            posterior=scored.X[:, POSTERIOR],
        )
        caught = part_flagged | verdict.block[start:end]  # a blocked fraud is caught too
        screener.classifier.mark(scored.slots, share, caught)
        flags.append(part_flagged)
        scores.append(
            screener.policy.stage1_score(result.score[start:end], scored.probability, caught)
        )
        start = end
    return ScreenedBatch(
        card_out=first.card_out,
        txs=txs,
        X=X,
        anomaly=anomaly,
        probability=prob,
        rule_score=result.score,
        stage1_score=scores[0] if len(scores) == 1 else np.concatenate(scores),
        flagged=flags[0] if len(flags) == 1 else np.concatenate(flags),
        blocked=verdict.block,
        allowed=verdict.allow,
        review=verdict.review,
        fired=result.fired,
        reasons=result.reasons,
        shadow_fired=result.shadow_fired,
        hits=result.hits,
        rules_version=rules.version,
    )


def merge_batches(outs: list[ScreenedBatch]) -> ScreenedBatch:
    """Several screened batches as one (for telemetry): arrays and lists concatenated."""
    if len(outs) == 1:
        return outs[0]
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(ScreenedBatch):
        if not f.init:
            continue
        values = [getattr(o, f.name) for o in outs]
        first = values[0]
        if isinstance(first, np.ndarray):
            merged[f.name] = np.concatenate(values)
        elif isinstance(first, list):
            merged[f.name] = [x for v in values for x in v]
        elif isinstance(first, dict):
            total: dict[Any, Any] = {}
            for v in values:
                for k, n in v.items():
                    total[k] = total.get(k, 0) + n
            merged[f.name] = total
        else:
            merged[f.name] = first
    return ScreenedBatch(**merged)


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
        # the labelled frauds tell the policy's recall controller how it did
        self.classifier.on_fraud = self.policy.controller.observe
        self.card_out: Callable[[str], str] = str
        self.allow_beats_block = False  # the actions' precedence (streams.rules.engine)

    @classmethod
    def from_settings(cls, settings: Settings, rules: RuleSet) -> Screener:
        """The configured screener (its calibrations are batch-independent: every path, live
        or offline, gets the same scores whatever its batch boundaries)."""
        from streams.privacy import Pseudonymizer

        pseudonymizer = Pseudonymizer(settings.pseudonymize_key)
        screener = cls(
            rules,
            FlagPolicy.from_settings(settings),
            anomaly=AnomalyScorer(
                settings.anomaly_trees, settings.anomaly_height, settings.anomaly_learn_every
            ),
            classifier=OnlineClassifier(cache_size=settings.label_cache_size),
        )
        warm_start = settings.model_dir / WARM_START_FILE
        if settings.stage1_warm_start and warm_start.exists():
            screener.classifier.load(warm_start)
        if pseudonymizer.enabled:
            screener.card_out = pseudonymizer
        screener.allow_beats_block = settings.rules_allow_beats_block
        return screener

    def screen(
        self, txs: list[Transaction], terminal_labels: list[int] | None = None
    ) -> ScreenedBatch:
        """Screen a micro-batch in order. ``terminal_labels`` (offline replays of labelled
        history only) feeds each transaction's label to the terminal table right after it; the
        table's delay filter keeps it unseen for 7 days, as when it comes from the labels topic."""
        return judge([(self, self.score(txs, terminal_labels))])

    def score(self, txs: list[Transaction], terminal_labels: list[int] | None = None) -> Scored:
        """The stateful half of ``screen``: features, anomaly score and online probability of
        each transaction, in order (card windows, anomaly model and classifier updated)."""
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
                add_label(tx.terminal_id, tx.ts_ms, label, tx.card_id, tx.amount)
        # fromiter: the same values as np.array(flat), a third faster for a list of floats
        X = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(n, len(MODEL_FEATURES))
        anomaly = self.anomaly.percentile(self.anomaly.score_and_learn(X))
        prob = self.classifier.predict_batch(X)
        ts = np.fromiter((tx.ts_ms for tx in txs), dtype=np.int64, count=n)
        cards = np.fromiter((card_key(tx.card_id) for tx in txs), dtype=np.uint32, count=n)
        slots = self.classifier.remember([tx.transaction_id for tx in txs], X, cards, ts)
        return Scored(txs, X, ts, anomaly, prob, slots, self.policy.controller.budget)
