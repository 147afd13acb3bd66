"""Every Prometheus metric of both workers, defined once, and the helpers the workers call.

The metrics live in prometheus_client's default registry, so one process (``fraudstream demo``
runs both stages) exposes one ``/metrics``; the ``stage`` label tells the stages apart. Label
values are free text except ``stage`` (``stage1`` / ``stage2``) and ``result`` (success/failure).

Helpers take whole batches where the workers have them (``observe_scores(stage, model, scores)``
observes a batch with one vectorised bucket count instead of one call per value).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, Info

from streams.observability.drift import CategoricalPsiMonitor, PsiMonitor

STAGE1 = "stage1"
STAGE2 = "stage2"
ACTIONS = ("approve", "review", "decline")
DRIFT_SIGNALS = ("score", "flag_rate", "decision_mix")

SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
PROCESSING_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)

# --- throughput and outcomes -------------------------------------------------------------------
TRANSACTIONS_CONSUMED = Counter(
    "fraudstream_transactions_consumed", "Transactions read from Kafka", ["stage"]
)
TRANSACTIONS_FLAGGED = Counter(
    "fraudstream_transactions_flagged", "Transactions stage 1 forwarded to stage 2"
)
DECISIONS = Counter(
    "fraudstream_decisions",
    "Decisions published, by deciding stage and action",
    ["stage", "action"],
)
DEAD_LETTERS = Counter(
    "fraudstream_dead_letters", "Messages sent to a dead-letter topic", ["stage", "kind"]
)
RETRIES = Counter("fraudstream_retries", "Messages sent to a retry topic", ["stage", "kind"])
RULE_HITS = Counter("fraudstream_rule_hits", "Rule firings (shadow rules too)", ["rule", "shadow"])
LABELS_CONSUMED = Counter("fraudstream_labels_consumed", "Fraud/genuine labels read")
LABELS_LATE = Counter(
    "fraudstream_labels_late",
    "Labels read after the stream passed their publication time (applied at the next segment)",
)
LABEL_WAIT_TIMEOUTS = Counter(
    "fraudstream_label_wait_timeouts",
    "Batches screened after waiting labels_wait_ms for labels that did not come",
)
ONLINE_MODEL_UPDATES = Counter(
    "fraudstream_online_model_updates", "learn_one calls on the online models", ["model"]
)
RULE_RELOADS = Counter("fraudstream_rule_reloads", "Rule-set hot reloads", ["result"])

# --- distributions -----------------------------------------------------------------------------
SCORE = Histogram(
    "fraudstream_score",
    "Scores given, by stage and model",
    ["stage", "model"],
    buckets=SCORE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "fraudstream_batch_size", "Messages per processed batch", ["stage"], buckets=BATCH_SIZE_BUCKETS
)
PROCESSING_SECONDS = Histogram(
    "fraudstream_processing_seconds",
    "Wall time to process one batch",
    ["stage"],
    buckets=PROCESSING_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "fraudstream_end_to_end_seconds",
    "From the producer's send time to the decision, per transaction",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)

# --- state -------------------------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    "fraudstream_consumer_lag",
    "Messages behind the high watermark",
    ["stage", "topic", "partition"],
)
BROKER_UP = Gauge("fraudstream_broker_up", "1 if the worker reaches the broker, else 0", ["stage"])
RULES_INFO = Info("fraudstream_rules", "Rule set in force")
MODEL_INFO = Info("fraudstream_model", "Stage-2 model in force (and challenger, if any)")
# The keys each Info metric carries (exposed as labels of ``<name>_info``).
INFO_LABELS = {"fraudstream_rules": ("version",), "fraudstream_model": ("version", "challenger")}
DRIFT_PSI = Gauge(
    "fraudstream_drift_psi", "Population stability index, window vs reference", ["stage", "signal"]
)
FLAG_RATE = Gauge("fraudstream_flag_rate", "Share of the recent window stage 1 forwarded")
STAGE1_RECALL = Gauge(
    "fraudstream_stage1_recall",
    "Share of the partition's recent labelled frauds (cards not known compromised) stage 1 "
    "forwarded",
    ["partition"],
)
STAGE1_BUDGET = Gauge(
    "fraudstream_stage1_budget",
    "Share of traffic the partition's recall controller lets stage 1 forward",
    ["partition"],
)
STAGE1_BUDGET_MAXIMUM = Gauge(
    "fraudstream_stage1_budget_maximum", "The forward budget's maximum (stage1_max_forward_share)"
)
STAGE1_RECALL_TARGET = Gauge(
    "fraudstream_stage1_recall_target", "The recall target (stage1_recall_target)"
)
RULES_FORWARD_SHARE = Gauge(
    "fraudstream_rules_forward_share",
    "Share of the recent traffic the current rule set forwards by itself (set on reload)",
)
STAGE1_FORWARD_SHARE = Gauge(
    "fraudstream_stage1_forward_share",
    "Share of the partition's recent window (50,000 transactions) that stage 1 forwarded",
    ["partition"],
)

CHECKPOINTS = Counter(
    "fraudstream_stage1_checkpoints", "Stage-1 partition checkpoints written", ["result"]
)
CHECKPOINT_SECONDS = Counter(
    "fraudstream_stage1_checkpoint_seconds",
    "Seconds the stage-1 worker spent copying checkpoint snapshots out between two batches "
    "(their compression runs on another thread)",
)
CHECKPOINT_BYTES = Gauge(
    "fraudstream_stage1_checkpoint_bytes",
    "Size of the partition's latest checkpoint",
    ["partition"],
)


def init_stage(stage: str) -> None:
    """Create a stage's label sets at zero, so rates and alerts see a series from the start."""
    TRANSACTIONS_CONSUMED.labels(stage)
    BROKER_UP.labels(stage)
    BATCH_SIZE.labels(stage)
    PROCESSING_SECONDS.labels(stage)
    END_TO_END_SECONDS.labels(stage)
    for action in ACTIONS if stage == STAGE2 else ("approve",):
        DECISIONS.labels(stage, action)
    for result in ("success", "failure"):
        RULE_RELOADS.labels(result)


# --- counters ----------------------------------------------------------------------------------
def record_consumed(stage: str, n: int = 1) -> None:
    if n > 0:
        TRANSACTIONS_CONSUMED.labels(stage).inc(n)


def record_flagged(n: int = 1) -> None:
    if n > 0:
        TRANSACTIONS_FLAGGED.inc(n)


def record_decision(stage: str, action: str, n: int = 1) -> None:
    if n > 0:
        DECISIONS.labels(stage, action).inc(n)


def record_decisions(stage: str, counts: Mapping[str, int]) -> None:
    """A batch's decisions as ``{action: count}``."""
    for action, n in counts.items():
        record_decision(stage, action, n)


def record_dead_letter(stage: str, kind: str, n: int = 1) -> None:
    if n > 0:
        DEAD_LETTERS.labels(stage, kind).inc(n)


def record_retry(stage: str, kind: str, n: int = 1) -> None:
    if n > 0:
        RETRIES.labels(stage, kind).inc(n)


def record_rule_hits(hits: Mapping[str, int], shadow: bool = False) -> None:
    """A batch's rule firings as ``{rule_id: count}``."""
    flag = "true" if shadow else "false"
    for rule, n in hits.items():
        if n > 0:
            RULE_HITS.labels(rule, flag).inc(n)


def record_labels_consumed(n: int = 1) -> None:
    if n > 0:
        LABELS_CONSUMED.inc(n)


def record_late_labels(n: int) -> None:
    if n > 0:
        LABELS_LATE.inc(n)


def record_label_wait_timeout() -> None:
    LABEL_WAIT_TIMEOUTS.inc()


def record_online_model_update(model: str, n: int = 1) -> None:
    if n > 0:
        ONLINE_MODEL_UPDATES.labels(model).inc(n)


def record_rule_reload(ok: bool) -> None:
    RULE_RELOADS.labels("success" if ok else "failure").inc()


def record_checkpoint_snapshot(seconds: float) -> None:
    CHECKPOINT_SECONDS.inc(seconds)


def record_checkpoint(partition: int, size: int | None) -> None:
    """A partition checkpoint produced (``size`` bytes), or skipped (None)."""
    CHECKPOINTS.labels("written" if size is not None else "skipped").inc()
    if size is not None:
        CHECKPOINT_BYTES.labels(str(partition)).set(size)


# --- histograms --------------------------------------------------------------------------------
def observe_scores(stage: str, model: str, scores: Iterable[float]) -> None:
    _observe_many(SCORE.labels(stage, model), scores)


def observe_batch(stage: str, size: int, seconds: float) -> None:
    """One processed batch: its size and the wall time it took."""
    BATCH_SIZE.labels(stage).observe(size)
    PROCESSING_SECONDS.labels(stage).observe(seconds)


def observe_end_to_end(stage: str, seconds: Iterable[float]) -> None:
    """Per-transaction latencies, in seconds, from producer send time to decision."""
    _observe_many(END_TO_END_SECONDS.labels(stage), seconds)


def observe_end_to_end_since(
    stage: str, sent_ms: Iterable[float], now: float | None = None
) -> None:
    """Latencies from producer send times in epoch milliseconds to ``now`` (default: the clock)."""
    sent = np.asarray(list(sent_ms), dtype=np.float64)
    if len(sent):
        now_s = time.time() if now is None else now
        observe_end_to_end(stage, np.maximum(now_s - sent / 1000.0, 0.0))


def _observe_many(child: Any, values: Iterable[float]) -> None:
    """``Histogram.observe`` for a whole batch: one bucket count per bucket, not per value.

    Uses the histogram child's bucket values (prometheus_client keeps them per bucket, not
    cumulative); falls back to plain ``observe`` if that layout ever changes.
    """
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        return
    try:
        bounds = child._upper_bounds
        buckets = child._buckets
        total = child._sum
    except AttributeError:  # pragma: no cover - another prometheus_client layout
        for v in arr.tolist():
            child.observe(v)
        return
    idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), arr, side="left")
    for i, n in enumerate(np.bincount(idx, minlength=len(bounds)).tolist()):
        if n:
            buckets[i].inc(n)
    total.inc(float(arr.sum()))


# --- gauges and info ---------------------------------------------------------------------------
def set_consumer_lag(stage: str, topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(stage, topic, str(partition)).set(max(0, lag))


def clear_consumer_lag(stage: str, topic: str, partition: int) -> None:
    """Drop a partition's lag series (on revoke: another worker now reports it)."""
    with contextlib.suppress(KeyError):
        CONSUMER_LAG.remove(stage, topic, str(partition))


def set_broker_up(stage: str, up: bool) -> None:
    BROKER_UP.labels(stage).set(1 if up else 0)


def set_rules_version(version: str) -> None:
    RULES_INFO.info({"version": version})


def set_model_version(version: str, challenger: str | None = None) -> None:
    MODEL_INFO.info({"version": version, "challenger": challenger or ""})


def set_drift_psi(stage: str, signal: str, value: float) -> None:
    DRIFT_PSI.labels(stage, signal).set(value)


def set_stage1_recall(partition: int, recall: float, budget: float, forward_share: float) -> None:
    """The recall controller's state of one partition (NaN until it has seen a fraud)."""
    label = str(partition)
    STAGE1_RECALL.labels(label).set(recall)
    STAGE1_BUDGET.labels(label).set(budget)
    STAGE1_FORWARD_SHARE.labels(label).set(forward_share)


def set_rules_forward_share(share: float) -> None:
    RULES_FORWARD_SHARE.set(share)


def set_stage1_targets(target: float, maximum: float) -> None:
    STAGE1_RECALL_TARGET.set(target)
    STAGE1_BUDGET_MAXIMUM.set(maximum)


def clear_stage1_recall(partition: int) -> None:
    for gauge in (STAGE1_RECALL, STAGE1_BUDGET, STAGE1_FORWARD_SHARE):
        with contextlib.suppress(KeyError):
            gauge.remove(str(partition))


def set_flag_rate(rate: float) -> None:
    FLAG_RATE.set(rate)


class DriftTracker:
    """A stage's drift monitors, publishing to ``fraudstream_drift_psi`` (and the flag rate).

    ``observe_scores`` feeds the score PSI, ``observe_flags`` the flag-rate PSI and
    ``fraudstream_flag_rate``, ``observe_actions`` the decision-mix PSI. A gauge is set only once
    its monitor has a full reference and window. Call ``reset()`` when the model or the rule set
    changes: the new one legitimately moves the distributions.
    """

    def __init__(self, stage: str, reference_size: int = 10_000, window_size: int = 10_000) -> None:
        self.stage = stage
        self.score = PsiMonitor(reference_size, window_size, bins=10)
        self.flags = CategoricalPsiMonitor(reference_size, window_size)
        self.actions = CategoricalPsiMonitor(reference_size, window_size)

    def observe_scores(self, scores: Iterable[float]) -> float | None:
        self.score.observe_many(scores)
        return self._publish("score", self.score.psi())

    def observe_flags(self, flagged: int, total: int) -> float | None:
        self.flags.observe_counts({True: flagged, False: max(0, total - flagged)})
        if self.flags.window_count:
            set_flag_rate(self.flags.share(True))
        return self._publish("flag_rate", self.flags.psi())

    def observe_actions(self, counts: Mapping[str, int]) -> float | None:
        self.actions.observe_counts(counts)
        return self._publish("decision_mix", self.actions.psi())

    def reset(self) -> None:
        self.score.reset()
        self.flags.reset()
        self.actions.reset()

    def _publish(self, signal: str, value: float | None) -> float | None:
        if value is not None:
            set_drift_psi(self.stage, signal, value)
        return value
