"""The handbook's evaluation metrics, as pure functions over polars frames and arrays.

Definitions follow DATA.md ("Evaluation protocol") and the handbook's shared functions
(``get_train_test_set``, ``card_precision_top_k_day``, ``card_precision_top_k``):

- AUC ROC and average precision are scikit-learn's, over all test transactions of a fold.
- Card Precision@k: per test day in order, drop the cards detected on earlier test days, take each
  card's highest score (and whether it had any fraud) that day, rank the cards, count the
  fraudulent ones among the top k and divide by k (always k, even with fewer cards). Those cards
  are then detected. The value is the mean over the test days present in the frame.
  Ties in score are broken by ``CUSTOMER_ID`` ascending (the handbook's ``groupby`` order; its
  unstable ``sort_values`` leaves ties unspecified).
- Known cards: on test day T, the transactions of every card with a fraud on any day from the
  start of the training week through T − 8 are removed (labels known under the 7-day delay).

Days are UTC calendar days, given either as ``pl.Date`` or as integers (any day numbering where
consecutive days differ by 1, e.g. the handbook's ``TX_TIME_DAYS``).
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

from streams.features.names import LABEL_DELAY_DAYS

_EPOCH = date(1970, 1, 1)

# Non-forwarded transactions score in [0, NOT_FORWARDED_MAX]; forwarded ones in [0.5, 1].
NOT_FORWARDED_MAX = 0.25


def auc_roc(y: np.ndarray | pl.Series, s: np.ndarray | pl.Series) -> float:
    """scikit-learn's ROC AUC; NaN when the labels hold a single class (undefined)."""
    y_arr, s_arr = np.asarray(y), np.asarray(s, dtype=np.float64)
    if len(np.unique(y_arr)) < 2:
        return math.nan
    return float(roc_auc_score(y_arr, s_arr))


def average_precision(y: np.ndarray | pl.Series, s: np.ndarray | pl.Series) -> float:
    """scikit-learn's average precision; NaN when there is no fraud (undefined)."""
    y_arr, s_arr = np.asarray(y), np.asarray(s, dtype=np.float64)
    if len(y_arr) == 0 or not np.any(y_arr == 1):
        return math.nan
    return float(average_precision_score(y_arr, s_arr))


def day_number(value: date | int) -> int:
    """A day as an integer (days since 1970-01-01 for dates; integers pass through)."""
    if isinstance(value, date):
        return (value - _EPOCH).days
    return int(value)


def _day_expr(frame: pl.DataFrame, column: str = "day") -> pl.Expr:
    dtype = frame.schema[column]
    if dtype == pl.Date:
        return pl.col(column).cast(pl.Int32).cast(pl.Int64)
    if dtype.is_integer():
        return pl.col(column).cast(pl.Int64)
    raise TypeError(f"column {column!r} must be a date or an integer day, not {dtype}")


def card_precision_at_k(frame: pl.DataFrame, k: int = 100) -> tuple[float, list[float]]:
    """(mean over days, daily values) of Card Precision@k.

    ``frame`` has ``CUSTOMER_ID, day, score, TX_FRAUD``. An empty frame gives (NaN, []).
    """
    if k <= 0:
        raise ValueError("k must be positive")
    cards = (
        frame.select(
            pl.col("CUSTOMER_ID"),
            _day_expr(frame).alias("_day"),
            pl.col("score").cast(pl.Float64),
            pl.col("TX_FRAUD").cast(pl.Int64),
        )
        .group_by("_day", "CUSTOMER_ID")
        .agg(pl.col("score").max(), pl.col("TX_FRAUD").max())
        .sort(["_day", "score", "CUSTOMER_ID"], descending=[False, True, False])
    )
    detected: set[object] = set()
    daily: list[float] = []
    for (_,), day in cards.group_by(["_day"], maintain_order=True):
        candidates = day.filter(~pl.col("CUSTOMER_ID").is_in(list(detected)))
        top = candidates.head(k)
        hits = top.filter(pl.col("TX_FRAUD") == 1)["CUSTOMER_ID"].to_list()
        daily.append(len(hits) / k)
        detected.update(hits)
    mean = float(np.mean(daily)) if daily else math.nan
    return mean, daily


def remove_known_cards(
    test: pl.DataFrame,
    history: pl.DataFrame,
    train_start: date | int,
    delay_days: int = LABEL_DELAY_DAYS,
) -> pl.DataFrame:
    """``test`` without the rows of cards known to be compromised on their day.

    A row of day T is dropped when its card has a fraud in ``history`` on a day d with
    ``train_start <= d <= T - delay_days - 1`` (T − 8 for the 7-day delay). Both frames need
    ``CUSTOMER_ID`` and ``day`` (same day type as ``train_start``); ``history`` also
    ``TX_FRAUD``. Row order is kept.
    """
    start = day_number(train_start)
    first_fraud = (
        history.select(
            pl.col("CUSTOMER_ID"),
            _day_expr(history).alias("_day"),
            pl.col("TX_FRAUD").cast(pl.Int64),
        )
        .filter((pl.col("TX_FRAUD") == 1) & (pl.col("_day") >= start))
        .group_by("CUSTOMER_ID")
        .agg(pl.col("_day").min().alias("_first_fraud"))
    )
    marked = test.with_columns(_day_expr(test).alias("_day")).join(
        first_fraud, on="CUSTOMER_ID", how="left", maintain_order="left"
    )
    known = pl.col("_first_fraud").is_not_null() & (
        pl.col("_first_fraud") <= pl.col("_day") - (delay_days + 1)
    )
    return marked.filter(~known).drop("_day", "_first_fraud")


def two_stage_scores(
    stage1_score: np.ndarray | pl.Series,
    stage1_flagged: np.ndarray | pl.Series,
    stage2_score: np.ndarray | pl.Series,
) -> np.ndarray:
    """Final scores of the cascade, in [0, 1].

    Forwarded: ``0.5 + 0.5 · stage2`` (in [0.5, 1]). Not forwarded: ``0.25 · stage1`` (in
    [0, 0.25]); ``stage2_score`` is ignored there and may be NaN. Every forwarded transaction
    therefore ranks above every non-forwarded one, each group in the order of its own stage's
    score (both maps are increasing; the factors are powers of two, so the scaling is exact and
    adding 0.5 merges only stage-2 scores closer than about 1e-16). Scores are clipped to [0, 1].
    """
    s1 = np.clip(np.asarray(stage1_score, dtype=np.float64), 0.0, 1.0)
    flagged = np.asarray(stage1_flagged, dtype=bool)
    s2 = np.clip(np.nan_to_num(np.asarray(stage2_score, dtype=np.float64), nan=0.0), 0.0, 1.0)
    if not (s1.shape == flagged.shape == s2.shape):
        raise ValueError("stage1_score, stage1_flagged and stage2_score differ in length")
    return np.where(flagged, 0.5 + 0.5 * s2, NOT_FORWARDED_MAX * s1)
