"""Stage-1 figures of the evaluation report, on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from streams.evaluation.stage1_stats import forward_rate_recall, rule_contributions, threshold_sweep


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
