"""Evaluation metrics on small hand-made cases (expected values worked out by hand)."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from streams.evaluation.handbook_metrics import (
    auc_roc,
    average_precision,
    card_precision_at_k,
    remove_known_cards,
    two_stage_scores,
)


def frame(rows: list[tuple[int, int, float, int]]) -> pl.DataFrame:
    """(card, day, score, fraud) rows."""
    return pl.DataFrame(rows, schema=["CUSTOMER_ID", "day", "score", "TX_FRAUD"], orient="row")


# --- AUC ROC and average precision ----------------------------------------------------------
def test_auc_and_ap_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert auc_roc(y, s) == pytest.approx(0.75)
    # ranked: 0.8(1) 0.4(0) 0.35(1) 0.1(0): AP = 1/2 * (1/1 + 2/3)
    assert average_precision(y, s) == pytest.approx(0.5 * (1 + 2 / 3))


def test_auc_and_ap_undefined_give_nan():
    assert math.isnan(auc_roc(np.array([0, 0]), np.array([0.1, 0.2])))
    assert math.isnan(average_precision(np.array([0, 0]), np.array([0.1, 0.2])))
    assert math.isnan(average_precision(np.array([]), np.array([])))


# --- Card Precision@k -----------------------------------------------------------------------
def test_cp_fewer_cards_than_k_still_divides_by_k():
    f = frame([(1, 0, 0.9, 1), (2, 0, 0.8, 0), (3, 0, 0.7, 1)])
    mean, daily = card_precision_at_k(f, k=5)
    assert daily == [pytest.approx(2 / 5)]
    assert mean == pytest.approx(0.4)


def test_cp_uses_each_cards_max_score_and_any_fraud_of_the_day():
    # card 1: fraud tx scored low, genuine tx scored high -> card score 0.95, fraudulent
    f = frame([(1, 0, 0.2, 1), (1, 0, 0.95, 0), (2, 0, 0.9, 1), (3, 0, 0.5, 0)])
    assert card_precision_at_k(f, k=1)[1] == [1.0]  # card 1 first
    assert card_precision_at_k(f, k=2)[1] == [1.0]  # cards 1 and 2
    assert card_precision_at_k(f, k=3)[1] == [pytest.approx(2 / 3)]


def test_cp_ties_broken_by_card_id():
    # cards 7 and 3 tie at 0.6; 3 goes first; card 3 is genuine
    f = frame([(7, 0, 0.6, 1), (3, 0, 0.6, 0), (5, 0, 0.1, 1)])
    assert card_precision_at_k(f, k=1)[1] == [0.0]
    assert card_precision_at_k(f, k=2)[1] == [0.5]


def test_cp_card_detected_on_day_one_is_excluded_on_day_two():
    f = frame(
        [
            # day 0: card 1 (fraud) is the top card -> detected; card 4 (fraud) not in the top 1
            (1, 0, 0.9, 1),
            (2, 0, 0.1, 0),
            (4, 0, 0.05, 1),
            # day 1: card 1 would be first again but is excluded -> card 2 (genuine) is the top
            (1, 1, 0.9, 1),
            (2, 1, 0.5, 0),
            (3, 1, 0.4, 1),
            # day 2: card 4 was fraudulent on day 0 but not detected -> it still counts
            (4, 2, 0.8, 1),
            (1, 2, 0.99, 1),
        ]
    )
    mean, daily = card_precision_at_k(f, k=1)
    assert daily == [1.0, 0.0, 1.0]
    assert mean == pytest.approx(2 / 3)


def test_cp_genuine_card_in_top_k_is_not_excluded_later():
    f = frame([(2, 0, 0.9, 0), (1, 0, 0.1, 1), (2, 1, 0.9, 1), (1, 1, 0.1, 0)])
    assert card_precision_at_k(f, k=1)[1] == [0.0, 1.0]


def test_cp_days_in_order_whatever_the_row_order_and_dates_work():
    rows = [(1, 1, 0.9, 1), (1, 0, 0.9, 1), (2, 1, 0.5, 1)]
    ints = card_precision_at_k(frame(rows), k=1)
    # day 0 first: card 1 detected there, so day 1's top is card 2 -> [1, 1]
    assert ints[1] == [1.0, 1.0]
    dates = frame(rows).with_columns(
        (pl.lit(date(2018, 8, 8)) + pl.duration(days=pl.col("day"))).alias("day")
    )
    assert card_precision_at_k(dates, k=1) == ints


def test_cp_empty_frame():
    mean, daily = card_precision_at_k(frame([]).cast({"day": pl.Int64}), k=100)
    assert math.isnan(mean) and daily == []


def _cp_reference(rows: list[tuple[int, int, float, int]], k: int) -> list[float]:
    """Plain-Python transcription of DATA.md's definition (ties: card id ascending)."""
    detected: set[int] = set()
    out = []
    for day in sorted({r[1] for r in rows}):
        best: dict[int, tuple[float, int]] = {}
        for card, d, score, fraud in rows:
            if d != day or card in detected:
                continue
            s, f = best.get(card, (-math.inf, 0))
            best[card] = (max(s, score), max(f, fraud))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        hits = [card for card, (_, f) in ranked if f == 1]
        out.append(len(hits) / k)
        detected.update(hits)
    return out


def test_cp_matches_plain_reference_on_random_data():
    rng = random.Random(7)
    for _ in range(20):
        rows = [
            (
                rng.randrange(40),
                rng.randrange(4),
                rng.choice([0.1, 0.2, rng.random()]),
                int(rng.random() < 0.2),
            )
            for _ in range(300)
        ]
        k = rng.choice([1, 5, 10, 50])
        assert card_precision_at_k(frame(rows), k=k)[1] == pytest.approx(_cp_reference(rows, k))


# --- known compromised cards ----------------------------------------------------------------
def test_remove_known_cards_boundaries():
    # training week days 0-6, delay 7-13, test 14-20
    history = frame(
        [
            (10, 6, 0, 1),  # last training day -> known from test day 14 (6 <= 14 - 8)
            (11, 7, 0, 1),  # first delay day -> known from day 15
            (12, 12, 0, 1),  # -> known from day 20
            (13, -1, 0, 1),  # before the training week: never counted
            (14, 14, 0, 1),  # fraud in the test week itself: known only from day 22
            (15, 3, 0, 0),  # genuine
        ]
    )
    test = frame(
        [
            (10, 14, 0, 0),
            (11, 14, 0, 0),
            (11, 15, 0, 0),
            (12, 19, 0, 0),
            (12, 20, 0, 0),
            (13, 14, 0, 0),
            (14, 20, 0, 0),
            (15, 20, 0, 0),
            (16, 14, 0, 0),
        ]
    )
    kept = remove_known_cards(test, history, train_start=0)
    assert kept.select("CUSTOMER_ID", "day").rows() == [
        (11, 14),
        (12, 19),
        (13, 14),
        (14, 20),
        (15, 20),
        (16, 14),
    ]
    assert kept.columns == test.columns


def test_remove_known_cards_with_dates():
    start = date(2018, 7, 25)
    history = pl.DataFrame(
        {
            "CUSTOMER_ID": [1, 2],
            "day": [start + timedelta(days=6), start + timedelta(days=7)],
            "TX_FRAUD": [1, 1],
        }
    )
    test_day = start + timedelta(days=14)
    test = pl.DataFrame({"CUSTOMER_ID": [1, 2, 3], "day": [test_day] * 3})
    kept = remove_known_cards(test, history, train_start=start)
    assert kept["CUSTOMER_ID"].to_list() == [2, 3]


# --- two-stage scores -----------------------------------------------------------------------
def test_two_stage_forwarded_rank_above_all_others():
    s1 = np.array([1.0, 0.9, 0.2, 0.95, 0.3])
    flagged = np.array([False, True, False, True, False])
    s2 = np.array([np.nan, 0.0, np.nan, 0.7, np.nan])
    final = two_stage_scores(s1, flagged, s2)
    assert final.tolist() == [0.25, 0.5, 0.05, 0.85, 0.075]
    assert final[flagged].min() > final[~flagged].max()
    # non-forwarded keep the stage-1 order; forwarded follow stage 2
    assert list(np.argsort(-final)) == [3, 1, 0, 4, 2]


def test_two_stage_length_mismatch():
    with pytest.raises(ValueError):
        two_stage_scores(np.zeros(2), np.zeros(3, dtype=bool), np.zeros(2))
