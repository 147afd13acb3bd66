"""Stage-1 figures of the evaluation report, on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from streams.evaluation.stage1_stats import (
    forward_rate_recall,
    max_window_share,
    recall_at_shares,
    rule_contributions,
    threshold_sweep,
)


def test_forward_rate_and_recall():
    flagged = np.array([True, False, True, False, False])
    fraud = np.array([1, 1, 0, 0, 0])
    assert forward_rate_recall(flagged, fraud) == (pytest.approx(0.4), pytest.approx(0.5))
    rate, recall = forward_rate_recall(np.array([True]), np.array([0]))
    assert rate == 1.0 and math.isnan(recall)


def test_threshold_sweep_takes_ties_together():
    sweep = threshold_sweep(np.array([0.5, 0.9, 0.1, 0.5]), np.array([1, 1, 0, 0]))
    assert sweep.rows() == [(0.9, 0.25, 0.5), (0.5, 0.75, 1.0), (0.1, 1.0, 1.0)]


def test_threshold_sweep_thinned_keeps_both_ends():
    rng = np.random.default_rng(0)
    sweep = threshold_sweep(rng.random(10_000), rng.random(10_000) < 0.1, points=50)
    assert sweep.height <= 50
    assert sweep["forward_rate"][-1] == 1.0 and sweep["recall"][-1] == 1.0
    assert sweep["forward_rate"].is_sorted()


def test_rule_contributions_by_hand():
    frame = pl.DataFrame(
        {
            "RULES_FIRED": [["a", "b"], ["a"], ["a"], ["b"], [], ["a", "a"]],
            "TX_FRAUD": [1, 1, 1, 0, 1, 0],
            "FLAGGED": [True, True, False, True, True, False],
        }
    )
    got = rule_contributions(frame)
    assert got.columns == [
        "rule",
        "fired",
        "frauds",
        "frauds_forwarded",
        "frauds_forwarded_no_other_rule",
        "precision",
    ]
    # a: rows 1, 2, 3, 6 (duplicate id counted once); frauds 1-3; forwarded 1-2; alone: row 2
    assert got.rows() == [("a", 4, 3, 2, 1, 0.75), ("b", 2, 1, 1, 0, 0.5)]


def test_rule_contributions_nothing_fired():
    frame = pl.DataFrame(
        {"RULES_FIRED": [[]], "TX_FRAUD": [1], "FLAGGED": [False]},
        schema={"RULES_FIRED": pl.List(pl.Utf8), "TX_FRAUD": pl.Int64, "FLAGGED": pl.Boolean},
    )
    assert rule_contributions(frame).height == 0


def test_recall_at_shares_takes_the_top_share_exactly():
    # 100 rows, distinct scores; the frauds rank 1st, 2nd, 5th, 10th, 20th and 51st
    rank = np.random.default_rng(3).permutation(100)
    score = 1.0 - rank / 100
    fraud = np.isin(rank, [0, 1, 4, 9, 19, 50]).astype(int)
    got = recall_at_shares(score, fraud)
    assert list(got) == ["0.01", "0.02", "0.05", "0.1", "0.2"]
    assert got == pytest.approx(
        {"0.01": 1 / 6, "0.02": 2 / 6, "0.05": 3 / 6, "0.1": 4 / 6, "0.2": 5 / 6}
    )


def test_recall_at_shares_ceil_and_ties_in_row_order():
    # 30 tied rows: 0.1 * 30 is 3 rows exactly (not 4 through float rounding), the earliest 3;
    # 0.01 and 0.02 round up to 1 row, 0.05 to 2, 0.2 is 6
    fraud = np.zeros(30, dtype=int)
    fraud[[0, 3, 5]] = 1
    got = recall_at_shares(np.full(30, 0.5), fraud)
    assert got == pytest.approx(
        {"0.01": 1 / 3, "0.02": 1 / 3, "0.05": 1 / 3, "0.1": 1 / 3, "0.2": 1.0}
    )
    # a NaN score ranks last
    assert recall_at_shares(np.array([np.nan, 0.1]), np.array([1, 0]), ("0.5",)) == {"0.5": 0.0}
    assert all(math.isnan(v) for v in recall_at_shares(np.ones(5), np.zeros(5)).values())


def test_max_window_share_of_a_burst():
    flagged = np.arange(20_000) % 100 == 0  # 1 % forwarded throughout
    flagged[7_000:8_000] = True  # a burst of 1,000 forwards
    # any 5,000-row window holds 50 multiples of 100; one over the whole burst has 10 of them
    # inside it: 1,000 + 40 forwarded
    assert max_window_share(flagged) == 1_040 / 5_000
    assert max_window_share(flagged, 1_000) == 1.0
    assert max_window_share(np.array([True, False, False, False])) == 0.25  # fewer rows: all
    assert math.isnan(max_window_share(np.array([], dtype=bool)))


def test_max_window_share_matches_brute_force():
    flagged = np.random.default_rng(5).random(3_000) < 0.2
    brute = max(flagged[i : i + 250].mean() for i in range(3_000 - 250 + 1))
    assert max_window_share(flagged, 250) == pytest.approx(brute)
    assert max_window_share(flagged[:250], 250) == pytest.approx(flagged[:250].mean())
