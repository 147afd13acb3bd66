"""How stage 1 screens: forward rate, recall, their trade-off, and what each rule catches."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import polars as pl

# Shares of traffic for ``recall_at_shares`` (CLI.md, ``stage1_recall_at``), as the JSON keys.
RECALL_AT_SHARES = ("0.01", "0.02", "0.05", "0.1", "0.2")
STREAM_WINDOW = 5_000  # rows per window of ``max_window_share`` (``max_forward_share_5000``)


def forward_rate_recall(
    flagged: np.ndarray | pl.Series, fraud: np.ndarray | pl.Series
) -> tuple[float, float]:
    """(forwarded / all, forwarded frauds / all frauds); NaN where the denominator is 0."""
    f = np.asarray(flagged, dtype=bool)
    y = np.asarray(fraud).astype(bool)
    rate = float(f.mean()) if len(f) else math.nan
    recall = float((f & y).sum() / y.sum()) if y.any() else math.nan
    return rate, recall


def recall_at_shares(
    score: np.ndarray | pl.Series,
    fraud: np.ndarray | pl.Series,
    shares: tuple[str, ...] = RECALL_AT_SHARES,
) -> dict[str, float]:
    """Recall if stage 1 forwarded the top share ``q`` of the rows by ``score``, per share.

    Forwarding ``q`` takes exactly ``ceil(q * n)`` rows (``q`` read exactly from its decimal
    key, so ``0.1 * 30`` is 3 rows, not 4) in a stable descending order of ``score``: among tied
    scores the earlier rows (stream order) go first, so a tie straddling the cut is split, not
    taken whole. NaN scores rank last. Keys are the shares as given; values are forwarded
    frauds / all frauds, NaN without frauds.
    """
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(fraud).astype(bool)
    n, n_fraud = len(s), int(y.sum())
    if n_fraud == 0:
        return {q: math.nan for q in shares}
    caught = np.cumsum(y[np.argsort(-s, kind="stable")])
    out = {}
    for q in shares:
        k = min(n, math.ceil(Fraction(q) * n))
        out[q] = float(caught[k - 1] / n_fraud) if k else 0.0
    return out


def max_window_share(flagged: np.ndarray | pl.Series, window: int = STREAM_WINDOW) -> float:
    """Largest share of forwarded rows in any ``window`` consecutive rows (rows in stream order);
    the share over all rows if there are fewer than ``window``; NaN without rows."""
    f = np.asarray(flagged, dtype=bool)
    if len(f) == 0:
        return math.nan
    if len(f) <= window:
        return float(f.mean())
    counts = np.concatenate(([0], np.cumsum(f, dtype=np.int64)))
    return float((counts[window:] - counts[:-window]).max() / window)


def threshold_sweep(
    score: np.ndarray | pl.Series, fraud: np.ndarray | pl.Series, points: int = 200
) -> pl.DataFrame:
    """Forward rate and recall if stage 1 forwarded every transaction scoring >= a threshold.

    Columns ``threshold, forward_rate, recall``, one row per distinct score at most ``points``
    quantiles apart, from the highest threshold (little forwarded) to the lowest (everything).
    """
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(fraud).astype(bool)
    if len(s) == 0:
        return pl.DataFrame(
            schema={"threshold": pl.Float64, "forward_rate": pl.Float64, "recall": pl.Float64}
        )
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # last index of each run of equal scores: forwarding ">= threshold" takes whole runs
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    if len(ends) > points:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, points).round().astype(int))]
    caught = np.cumsum(y_sorted)[ends]
    n_fraud = int(y.sum())
    return pl.DataFrame(
        {
            "threshold": s_sorted[ends],
            "forward_rate": (ends + 1) / len(s),
            "recall": caught / n_fraud if n_fraud else np.full(len(ends), math.nan),
        }
    )


def rule_contributions(frame: pl.DataFrame) -> pl.DataFrame:
    """Per rule id: what it fired on, the frauds among them, and those stage 1 forwarded.

    ``frame`` has ``RULES_FIRED`` (list of rule ids, every acting rule: ``flag`` and ``tag``),
    ``FLAGGED`` and ``TX_FRAUD``. Columns ``rule, fired, frauds, frauds_forwarded,
    frauds_forwarded_no_other_rule, precision`` (frauds / fired), most forwarded frauds first.
    A fraud counts as caught by a rule when the rule fired on it and stage 1 forwarded it;
    "no other rule" means this rule was the only one that fired on it.
    """
    schema = {
        "rule": pl.Utf8,
        "fired": pl.Int64,
        "frauds": pl.Int64,
        "frauds_forwarded": pl.Int64,
        "frauds_forwarded_no_other_rule": pl.Int64,
        "precision": pl.Float64,
    }
    fired = (
        frame.select(
            pl.col("RULES_FIRED").list.unique().alias("rule"),
            (pl.col("RULES_FIRED").list.unique().list.len() == 1).alias("_alone"),
            (pl.col("TX_FRAUD") == 1).alias("_y"),
            pl.col("FLAGGED").cast(pl.Boolean).alias("_f"),
        )
        .explode("rule")
        .drop_nulls("rule")
    )
    if fired.height == 0:
        return pl.DataFrame(schema=schema)
    caught = pl.col("_y") & pl.col("_f")
    return (
        fired.group_by("rule")
        .agg(
            pl.len().alias("fired"),
            pl.col("_y").sum().alias("frauds"),
            caught.sum().alias("frauds_forwarded"),
            (caught & pl.col("_alone")).sum().alias("frauds_forwarded_no_other_rule"),
        )
        .with_columns((pl.col("frauds") / pl.col("fired")).alias("precision"))
        .cast(schema)  # type: ignore[arg-type]
        .sort(["frauds_forwarded", "frauds", "rule"], descending=[True, True, False])
        .select(list(schema))
    )
