"""How far any scorer can go under the label delay: the delay ceiling.

A fraud at a compromised terminal whose frauds are not yet known (its label-delayed fraud count
``TERMINAL_NB_FRAUD_30DAY_WINDOW`` is 0) looks, at decision time, like any genuine payment at
that terminal: nothing in the transaction or the card differs (the handbook's second scenario).
The ceiling scores every other fraud 1 and everything else 0 (ties count as random order), and
measures it like a model. It needs the data's ``TX_FRAUD_SCENARIO`` column (handbook-format data
from the handbook or ``fraudstream simulate``) and is skipped without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from streams.evaluation.metrics import auc_roc, average_precision, card_precision_at_k


def invisible_frauds(frame: pl.DataFrame) -> pl.Expr:
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
