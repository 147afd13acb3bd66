"""How stage 1 screens: forward rate, recall, their trade-off, and what each rule catches."""

from __future__ import annotations

import math

import numpy as np
import polars as pl


def forward_rate_recall(
    flagged: np.ndarray | pl.Series, fraud: np.ndarray | pl.Series
) -> tuple[float, float]:
    """(forwarded / all, forwarded frauds / all frauds); NaN where the denominator is 0."""
    f = np.asarray(flagged, dtype=bool)
    y = np.asarray(fraud).astype(bool)
    rate = float(f.mean()) if len(f) else math.nan
    recall = float((f & y).sum() / y.sum()) if y.any() else math.nan
    return rate, recall


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
