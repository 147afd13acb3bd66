"""Measures of a fold's scored test week: the handbook's metrics for a score column, stage 1's
forwarding and Recall@K, and the reachable frauds (those the label delay did not hide)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from streams.evaluation.ceiling import hidden_by_delay, reachable_frauds
from streams.evaluation.handbook_metrics import auc_roc, average_precision, card_precision_at_k
from streams.evaluation.stage1_stats import (
    RECALL_AT_SHARES,
    forward_rate_recall,
    recall_at_shares,
)


def measure(frame: pl.DataFrame, column: str, stage1: bool = True) -> dict[str, Any]:
    y, s = frame["TX_FRAUD"].to_numpy(), frame[column].to_numpy()
    cp_frame = frame.select("CUSTOMER_ID", "day", pl.col(column).alias("score"), "TX_FRAUD")
    cp, daily = card_precision_at_k(cp_frame, k=100)
    out: dict[str, Any] = {
        "auc_roc": auc_roc(y, s),
        "average_precision": average_precision(y, s),
        "card_precision_at_100": cp,
        "card_precision_at_100_daily": daily,
    }
    if stage1:
        out.update(stage1_measure(frame))
    return out


def blocked(frame: pl.DataFrame) -> np.ndarray:
    """Rows a `block` rule declined at stage 1 (none when the frame does not say)."""
    if "BLOCKED" not in frame.columns:
        return np.zeros(frame.height, dtype=bool)
    return frame["BLOCKED"].to_numpy().astype(bool)


def stage1_measure(frame: pl.DataFrame) -> dict[str, Any]:
    """Stage 1 on the evaluated rows: its forwarding (``FLAGGED``, and ``BLOCKED``: a fraud a
    `block` rule declined is caught too) and what forwarding the top shares by ``STAGE1_SCORE``
    would catch, of all frauds and of the frauds not hidden by the label delay
    (``ceiling.reachable_frauds``; None without ``TX_FRAUD_SCENARIO``)."""
    flagged = frame["FLAGGED"].to_numpy().astype(bool) | blocked(frame)
    y = frame["TX_FRAUD"].to_numpy()
    score = frame["STAGE1_SCORE"].to_numpy()
    rate, recall = forward_rate_recall(flagged, y)
    reachable = reachable_frauds(frame)
    return {
        "stage1_forward_rate": rate,
        "stage1_recall": recall,
        "stage1_recall_reachable": None
        if reachable is None
        else forward_rate_recall(flagged, reachable)[1],
        "stage1_recall_at": recall_at_shares(score, y, RECALL_AT_SHARES),
        "stage1_recall_reachable_at": None
        if reachable is None
        else recall_at_shares(score, reachable, RECALL_AT_SHARES),
    }


def with_scenario(kept: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    """``kept`` with the data's scenario and whether each fraud was hidden by the label delay
    (``ceiling.hidden_by_delay``, on the whole history)."""
    if "TX_FRAUD_SCENARIO" not in df.columns:
        return kept
    scenario = df.select("TRANSACTION_ID", "TX_FRAUD_SCENARIO").with_columns(hidden_by_delay(df))
    keys = kept["TRANSACTION_ID"].dtype
    return kept.join(
        scenario.with_columns(pl.col("TRANSACTION_ID").cast(keys)),
        on="TRANSACTION_ID",
        how="left",
        maintain_order="left",
    )


def kafka_measure(compared: pl.DataFrame, fold: int) -> dict[str, Any]:
    """A fold's metrics from the scores the workers published (known cards removed, as above)."""
    kept = compared.filter((pl.col("fold") == fold) & pl.col("evaluated"))
    out = measure(kept, "kafka_score", stage1=False)
    del out["card_precision_at_100_daily"]
    rate, recall = forward_rate_recall(
        kept["kafka_flagged"].to_numpy(), kept["TX_FRAUD"].to_numpy()
    )
    out["stage1_forward_rate"], out["stage1_recall"] = rate, recall
    return out
