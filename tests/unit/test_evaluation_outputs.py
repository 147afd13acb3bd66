"""``metrics.json`` assembly: the mean over folds and the top-level ``stream`` object."""

from __future__ import annotations

import math

import pytest

from streams.evaluation.outputs import assemble, fold_mean


def test_fold_mean_of_nested_dicts_key_by_key():
    folds = [
        {
            "fold": 0,
            "test_start": "2018-08-01",
            "auc_roc": 0.8,
            "stage1_recall": math.nan,
            "stage1_recall_reachable": None,
            "stage1_recall_at": {"0.01": 0.2, "0.1": 0.6},
            "single_stage": {"auc_roc": 0.7, "daily": [1.0, 2.0]},
            "delay_ceiling": None,
        },
        {
            "fold": 1,
            "test_start": "2018-08-08",
            "auc_roc": 0.6,
            "stage1_recall": 0.5,
            "stage1_recall_reachable": None,
            "stage1_recall_at": {"0.01": 0.4, "0.1": math.nan},
            "single_stage": {"auc_roc": 0.9, "daily": [3.0]},
            "delay_ceiling": None,
        },
    ]
    got = fold_mean(folds)
    assert got == {
        "auc_roc": pytest.approx(0.7),
        "stage1_recall": 0.5,  # NaN skipped
        "stage1_recall_reachable": None,  # None in every fold stays None
        "stage1_recall_at": {"0.01": pytest.approx(0.3), "0.1": 0.6},
        "single_stage": {"auc_roc": pytest.approx(0.8)},
        "delay_ceiling": None,
    }


def test_fold_mean_skips_none_among_values():
    got = fold_mean(
        [
            {"x": 0.2, "d": {"a": 0.1}},
            {"x": None, "d": None},
            {"x": 0.4, "d": {"a": 0.3, "b": 1.0}},
        ]
    )
    assert got == {"x": pytest.approx(0.3), "d": {"a": pytest.approx(0.2), "b": 1.0}}


def test_assemble_puts_stream_at_the_top(tmp_path):
    fold = {"fold": 0, "auc_roc": 0.5, "evaluated_rows": 10, "evaluated_frauds": 1}
    stream = {"rows": 10, "forward_rate": 0.1234567, "max_forward_share_5000": 0.3}
    doc = assemble("handbook-ch3", tmp_path / "x.csv", [fold], {}, 10, stream)
    assert doc["stream"] == {"rows": 10, "forward_rate": 0.123457, "max_forward_share_5000": 0.3}
    assert doc["mean"]["auc_roc"] == 0.5
