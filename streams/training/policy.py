"""Decision thresholds from an analyst capacity, set on the validation window at training time.

A fixed score threshold means something else after every retrain (another fraud rate, another
class weight, more trees). What a fraud team fixes is how much it can review, so ``train``
derives the thresholds from that and records them in the model metadata (``policy``); stage 2
uses them when ``config/policy.yaml`` says ``model`` (``streams.stage2.policy``).

- **review**: the lowest score at which, on the validation days, on average at most
  ``review_capacity`` cards a day would reach an analyst (a card counts once a day, by its
  highest score, as in Card Precision@k). The validation rows are all the window's
  transactions (stage 1 forwards a subset of them, so the served review queue is at most this).
  The capacity is in cards a day of the training data's traffic: scale it with the traffic.
- **decline**: the lowest score from which at least ``decline_precision`` of the validation
  transactions are fraud (a false decline blocks a genuine customer), and never below the
  review threshold; 1.0 (no declines) when no score is that precise.

The validation scores come from the search's model, trained without the validation days, so the
thresholds are set out of sample; the refit model shares its parameters and round count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.errors import DataError

REVIEW_CAPACITY = 100.0  # cards a day
DECLINE_PRECISION = 0.9


def _card_day_max(scores: np.ndarray, day: np.ndarray, cards: np.ndarray) -> np.ndarray:
    """Each (day, card)'s highest score."""
    if len(scores) == 0:
        return np.empty(0)
    keys = np.char.add(np.char.add(day.astype(str), "|"), cards.astype(str))
    order = np.lexsort((-scores, keys))
    first = np.ones(len(order), dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    return np.asarray(scores[order][first], dtype=np.float64)


def capacity_thresholds(
    scores: np.ndarray,
    y: np.ndarray,
    day: np.ndarray,
    cards: np.ndarray,
    *,
    review_capacity: float = REVIEW_CAPACITY,
    decline_precision: float = DECLINE_PRECISION,
) -> dict[str, Any]:
    """The review and decline thresholds (see the module docstring) and what they did on the
    validation rows they were set on."""
    if review_capacity <= 0:
        raise DataError(f"review capacity must be above 0 cards a day, not {review_capacity}")
    if not 0.0 < decline_precision <= 1.0:
        raise DataError(f"decline precision must be in (0, 1], not {decline_precision}")
    scores = np.asarray(scores, dtype=np.float64)
    n_days = len(np.unique(day))
    if n_days == 0:
        raise DataError("no validation rows to set the policy thresholds on")
    best = np.sort(_card_day_max(scores, day, cards))[::-1]
    allowed = int(np.floor(review_capacity * n_days))
    # strictly above the first card that does not fit, so ties never overflow the capacity;
    # 0 when the capacity covers every card (review everything stage 1 forwards)
    review = float(np.nextafter(best[allowed], np.inf)) if allowed < len(best) else 0.0
    review = min(review, 1.0)
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(np.asarray(y)[order] == 1)
    precision = hits / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= decline_precision)
    decline = 1.0
    if len(ok):
        k = int(ok[-1])
        s_sorted = scores[order]
        # the k-th score is included only if no lower-ranked row shares it
        decline = float(s_sorted[k])
        if k + 1 < len(s_sorted) and s_sorted[k + 1] == decline:
            decline = float(np.nextafter(decline, np.inf))
    decline = min(1.0, max(decline, review))
    policy: dict[str, Any] = {
        "review_threshold": review,  # not rounded: a rounded one could let ties in
        "decline_threshold": decline,
        "review_capacity_cards_per_day": review_capacity,
        "decline_precision": decline_precision,
        "rule": "review: at most the capacity's cards a day on the validation days (a card by "
        "its highest score); decline: the lowest score from which validation transactions are "
        "at least decline_precision fraud, not below review",
    }
    policy["validation"] = policy_outcome(policy, scores, y, day, cards)
    return policy


def policy_outcome(
    policy: dict[str, Any],
    scores: np.ndarray,
    y: np.ndarray,
    day: np.ndarray,
    cards: np.ndarray,
) -> dict[str, Any]:
    """What the thresholds do on scored rows: cards a day at review or above, the share of the
    frauds they catch, the precision of the declines."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    n_days = max(1, len(np.unique(day)))
    review, decline = policy["review_threshold"], policy["decline_threshold"]
    flagged = scores >= review
    declined = scores >= decline
    frauds = int(np.sum(y == 1))
    return {
        "days": n_days,
        "cards_reviewed_or_declined_per_day": round(
            float(np.sum(_card_day_max(scores, day, cards) >= review)) / n_days, 2
        ),
        "fraud_recall_reviewed_or_declined": round(float(np.sum(flagged & (y == 1))) / frauds, 4)
        if frauds
        else None,
        "declined_per_day": round(float(np.sum(declined)) / n_days, 2),
        "decline_precision": round(float(np.mean(y[declined] == 1)), 4) if declined.any() else None,
    }
