"""How far any scorer can go under the label delay: the delay ceiling, and reachable frauds.

A fraud at a compromised terminal (the handbook's second scenario) looks, at decision time, like
any genuine payment at that terminal until an earlier fraud *of the same compromise* there has a
published label: nothing in the transaction or the card differs. Such a fraud is *hidden by the
delay*; every other fraud is *reachable*.

``hidden_by_delay`` finds them on the whole history: at each terminal, in time order, a
compromise is a run of frauds with no genuine payment between them (a compromised terminal's
payments are all fraud), and a scenario-2 fraud is hidden while its run's first scenario-2 fraud
is less than the label delay old. Without that column (a frame not joined with it),
``invisible_frauds`` falls back to "no known fraud at the terminal in 30 days"
(``TERMINAL_NB_FRAUD_30DAY_WINDOW == 0``), which also counts as reachable a compromise whose
known fraud is an older, unrelated one.

The ceiling scores every reachable fraud 1 and everything else 0 (ties count as random order),
and measures it like a model. Both need the data's ``TX_FRAUD_SCENARIO`` column (handbook-format
data from the handbook or ``fraudstream simulate``) and are skipped without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from streams.evaluation.handbook_metrics import auc_roc, average_precision, card_precision_at_k
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS

HIDDEN = "HIDDEN_BY_DELAY"


def hidden_by_delay(df: pl.DataFrame, delay_days: int = LABEL_DELAY_DAYS) -> pl.Series:
    """Per row of ``df`` (the whole history: ``TERMINAL_ID``, ``ts_ms``, ``TX_FRAUD``,
    ``TX_FRAUD_SCENARIO``), whether it is a fraud hidden by the label delay (see the module)."""
    compromise = pl.col("TX_FRAUD_SCENARIO") == 2
    runs = (
        df.select("TERMINAL_ID", "ts_ms", "TX_FRAUD", "TX_FRAUD_SCENARIO")
        .with_row_index("_row")
        .sort("TERMINAL_ID", "ts_ms", "_row")
        .with_columns((pl.col("TX_FRAUD") == 0).cum_sum().over("TERMINAL_ID").alias("_run"))
        .with_columns(
            pl.when(compromise)
            .then(pl.col("ts_ms"))
            .min()
            .over("TERMINAL_ID", "_run")
            .alias("_start")
        )
        .with_columns(
            (
                (pl.col("TX_FRAUD") == 1)
                & compromise
                & (pl.col("ts_ms") - pl.col("_start") < delay_days * DAY_MS)
            ).alias(HIDDEN)
        )
        .sort("_row")
    )
    return runs[HIDDEN]


def invisible_frauds(frame: pl.DataFrame) -> pl.Expr:
    if HIDDEN in frame.columns:
        return pl.col(HIDDEN)
    return (
        (pl.col("TX_FRAUD") == 1)
        & (pl.col("TX_FRAUD_SCENARIO") == 2)
        & (pl.col("TERMINAL_NB_FRAUD_30DAY_WINDOW") == 0)
    )


def reachable_frauds(frame: pl.DataFrame) -> np.ndarray | None:
    """Per row: a fraud not hidden by the label delay (every fraud but ``invisible_frauds``),
    or None without the ``TX_FRAUD_SCENARIO`` column. A fraud whose scenario is missing counts
    as reachable."""
    if "TX_FRAUD_SCENARIO" not in frame.columns:
        return None
    reachable = (pl.col("TX_FRAUD") == 1) & ~invisible_frauds(frame).fill_null(False)
    return frame.select(reachable.fill_null(False))[:, 0].to_numpy().astype(bool)


def delay_ceiling(kept: pl.DataFrame) -> dict[str, Any] | None:
    """Metrics of the delay ceiling on the evaluated rows, or None without scenario labels."""
    if "TX_FRAUD_SCENARIO" not in kept.columns or kept.height == 0:
        return None
    frame = kept.with_columns(
        ((pl.col("TX_FRAUD") == 1) & ~invisible_frauds(kept)).cast(pl.Float64).alias("_oracle")
    )
    y = frame["TX_FRAUD"].to_numpy()
    s = frame["_oracle"].to_numpy()
    cp, _ = card_precision_at_k(
        frame.select("CUSTOMER_ID", "day", pl.col("_oracle").alias("score"), "TX_FRAUD"), k=100
    )
    frauds = int(y.sum())
    return {
        "auc_roc": auc_roc(y, s),
        "average_precision": average_precision(y, s),
        "card_precision_at_100": cp,
        "invisible_fraud_share": float(np.sum(y - s) / frauds) if frauds else None,
    }
