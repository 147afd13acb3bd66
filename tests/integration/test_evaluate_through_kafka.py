"""``evaluate --through-kafka``: the history through the broker, a stage-1 worker process and a
stage-2 (faust) worker process per fold publishes exactly the in-process scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.data.simulate import simulate
from streams.evaluation.run import evaluate
from tests.support import isolated_settings

pytestmark = pytest.mark.integration


def test_workers_publish_the_in_process_scores(kafka_broker, tmp_path: Path) -> None:
    data = tmp_path / "history.csv"
    simulate(customers=250, terminals=500, days=45, seed=11).write_csv(data)
    settings = isolated_settings(kafka_broker.bootstrap)
    out = tmp_path / "eval"

    metrics = evaluate(
        data, "handbook-ch3", out, None, settings, train_history_days=14, through_kafka=True
    )

    tk = metrics["through_kafka"]
    assert tk["identical"], tk
    assert tk["forward_mismatches"] == 0 and tk["score_mismatches"] == 0
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert tk["rows_compared"] == len(predictions) - 1 > 1000
    # both paths of the cascade were exercised: stage-1 scores and stage-2 decisions
    assert 0 < tk["forwarded"] < tk["rows_compared"]
    assert tk["labels"] == tk["transactions"] == metrics["history_rows"]
    for name in ("stage1_forward_rate", "stage1_recall"):
        assert tk["mean"][name] == pytest.approx(metrics["mean"][name], abs=1e-6), name
    # published scores have 6 decimals: the ties that rounding makes move the ranking metrics
    # by far less than their last reported digit
    for name in ("auc_roc", "average_precision", "card_precision_at_100"):
        assert tk["mean"][name] == pytest.approx(metrics["mean"][name], abs=5e-4), name
    assert (out / "logs" / "evaluate-stage1.log").is_file()
