"""Validation metrics of the handbook's protocol (DATA.md): AUC ROC, average precision, CP@k."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

from streams.evaluation.handbook_metrics import card_precision_at_k
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS


def known_card_mask(
    ts_ms: np.ndarray,
    cards: np.ndarray,
    fraud: np.ndarray,
    eval_mask: np.ndarray,
    since_ms: int,
    delay_days: int = LABEL_DELAY_DAYS,
) -> np.ndarray:
    """True for evaluation rows whose card had a fraud already known on that day.

    On evaluation day T a fraud is known if it happened from ``since_ms`` (the start of the
    training window) through day T − (delay + 1), i.e. before the start of day T − delay.
    """
    day = ts_ms // DAY_MS
    known = np.zeros(len(ts_ms), dtype=bool)
    fraud_rows = (fraud == 1) & (ts_ms >= since_ms)
    for t in np.unique(day[eval_mask]):
        before = fraud_rows & (day < t - delay_days)
        known_cards = np.unique(cards[before])
        today = eval_mask & (day == t)
        known[today] = np.isin(cards[today], known_cards)
    return known


def card_precision_at_k_of_arrays(
    day: np.ndarray, cards: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int = 100
) -> float | None:
    """Card Precision@k as the evaluation computes it (``streams.evaluation.handbook_metrics``);
    None when there are no rows."""
    if len(day) == 0:
        return None
    frame = pl.DataFrame({"CUSTOMER_ID": cards, "day": day, "score": scores, "TX_FRAUD": y})
    return card_precision_at_k(frame, k)[0]


def validation_metrics(
    y: np.ndarray, scores: np.ndarray, day: np.ndarray, cards: np.ndarray
) -> dict[str, float | int | None]:
    """AUC ROC, average precision and CP@100 (None when a metric is undefined)."""
    both = len(np.unique(y)) == 2
    return {
        "rows": len(y),
        "frauds": int(np.sum(y)),
        "auc_roc": round(float(roc_auc_score(y, scores)), 6) if both else None,
        "average_precision": round(float(average_precision_score(y, scores)), 6) if both else None,
        "card_precision_at_100": _round(card_precision_at_k_of_arrays(day, cards, y, scores, 100)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
