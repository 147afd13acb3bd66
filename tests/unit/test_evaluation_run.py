"""``evaluate`` end to end on a small simulated history, with a stand-in for stage 1."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from streams.evaluation import measure, run
from streams.evaluation.handbook_metrics import (
    auc_roc,
    average_precision,
    card_precision_at_k,
    remove_known_cards,
)
from streams.evaluation.protocol import folds
from streams.features.names import MODEL_FEATURES
from streams.features.offline import compute_features
from streams.settings import Settings
from streams.training import search
from streams.training.search import SearchSpace

START = datetime(2021, 3, 1)


def simulate(path: Path, days: int = 40, customers: int = 250, seed: int = 1) -> pl.DataFrame:
    """A small handbook-format history: scenario 1 (amount > 220) and compromised terminals."""
    rng = np.random.default_rng(seed)
    terminals = 150
    mean_amount = rng.uniform(5, 100, customers)
    rows = []
    compromised: dict[int, int] = {}  # terminal -> last day compromised
    for day in range(days):
        for t in rng.choice(terminals, 1, replace=False):
            compromised[int(t)] = day + 14
        for c in range(customers):
            for _ in range(rng.poisson(1.5)):
                secs = int(rng.integers(1, 86_399))
                amount = round(abs(rng.normal(mean_amount[c], mean_amount[c] / 2)), 2)
                term = int((c * 7 + rng.integers(0, 4)) % terminals)
                hit = compromised.get(term, -1) >= day > compromised.get(term, -1) - 14
                fraud = int(amount > 220 or hit)
                rows.append((START + timedelta(days=day, seconds=secs), c, term, amount, fraud))
    rows.sort(key=lambda r: r[0])
    df = pl.DataFrame(
        {
            "TRANSACTION_ID": list(range(len(rows))),
            "TX_DATETIME": [r[0].strftime("%Y-%m-%dT%H:%M:%S") for r in rows],
            "CUSTOMER_ID": [r[1] for r in rows],
            "TERMINAL_ID": [r[2] for r in rows],
            "TX_AMOUNT": [r[3] for r in rows],
            "TX_FRAUD": [r[4] for r in rows],
        }
    )
    df.write_csv(path)
    return df


def fake_screen(df, settings, rules_dir=None, progress=None):
    """Stand-in for streams.stage1.history.screen_history with its output contract."""
    feats = compute_features(df)
    amount = df["TX_AMOUNT"].to_numpy()
    risk = feats["TERMINAL_ID_RISK_7DAY_WINDOW"].to_numpy()
    score = np.clip(0.6 * amount / 300 + 0.4 * risk, 0, 1)
    rules = [
        (["big_amount"] if a > 200 else []) + (["risky_terminal"] if r > 0.2 else [])
        for a, r in zip(amount.tolist(), risk.tolist(), strict=True)
    ]
    if progress is not None:
        progress(df.height)
    return pl.concat(
        [
            df.select("TRANSACTION_ID", "ts_ms", "CUSTOMER_ID", "TERMINAL_ID", "TX_FRAUD"),
            feats,
            pl.DataFrame(
                {
                    "ANOMALY_SCORE": np.zeros(df.height),
                    "FRAUD_PROBABILITY": score,
                    "RULE_SCORE": np.array([float(bool(r)) for r in rules]),
                    "STAGE1_SCORE": score,
                    "FLAGGED": [
                        bool(r) or bool(s >= 0.3)
                        for r, s in zip(rules, score.tolist(), strict=True)
                    ],
                    "RULES_FIRED": pl.Series(rules, dtype=pl.List(pl.Utf8)),
                }
            ),
        ],
        how="horizontal",
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "tx.csv"
    simulate(data)
    out = tmp / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(run, "_screen", fake_screen)
    seen: list[int] = []
    try:
        metrics = run.evaluate(
            data, "handbook-ch5", out, None, Settings(), progress=seen.append, rounds=20
        )
    finally:
        mp.undo()
    return data, out, metrics, seen


def test_files_and_metric_keys(evaluated):
    _, out, metrics, seen = evaluated
    assert sum(seen) > 0
    for name in (
        "metrics.json",
        "predictions.csv",
        "report.md",
        "pr_curve.png",
        "stage1_forward_rate_recall.png",
        "rule_contribution.png",
        "stage1_recall_at.png",
    ):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    keys = {
        "auc_roc",
        "average_precision",
        "card_precision_at_100",
        "stage1_forward_rate",
        "stage1_recall",
    }
    assert len(metrics["folds"]) == 3  # 40 days: training weeks from day 19, 12, 5 fit; day -2 not
    for part in [*metrics["folds"], metrics["mean"]]:
        assert keys <= part.keys()
        assert {"auc_roc", "average_precision", "card_precision_at_100"} <= part[
            "single_stage"
        ].keys()
        assert all(isinstance(part[k], float) for k in keys)
        assert list(part["stage1_recall_at"]) == ["0.01", "0.02", "0.05", "0.1", "0.2"]
        assert all(0.0 <= v <= 1.0 for v in part["stage1_recall_at"].values())
        # the simulated data has no TX_FRAUD_SCENARIO: reachable recall is unknown
        assert part["stage1_recall_reachable"] is None
        assert part["stage1_recall_reachable_at"] is None
    for k in keys:
        assert metrics["mean"][k] == pytest.approx(
            np.mean([f[k] for f in metrics["folds"]]), abs=1e-6
        )
    for q, v in metrics["mean"]["stage1_recall_at"].items():
        assert v == pytest.approx(
            np.mean([f["stage1_recall_at"][q] for f in metrics["folds"]]), abs=1e-6
        )
    stream = metrics["stream"]
    assert stream["rows"] == metrics["history_rows"]
    assert 0.0 < stream["forward_rate"] <= stream["max_forward_share_5000"] <= 1.0
    report = (out / "report.md").read_text()
    assert "before** known-card" in report and "pr_curve.png" in report
    assert "stage1_recall_at.png" in report and "stage-1 recall (reachable)" in report


def test_predictions_cover_every_test_transaction(evaluated):
    data, out, _, _ = evaluated
    preds = pl.read_csv(out / "predictions.csv")
    assert preds.columns == ["TRANSACTION_ID", "fold", "score", "stage1_flagged"]
    df = pl.read_csv(data).with_columns(
        pl.col("TX_DATETIME").str.to_date("%Y-%m-%dT%H:%M:%S").alias("day")
    )
    fs = folds("handbook-ch5", df["day"].min(), df["day"].max())
    for f in fs:
        ids = df.filter(pl.col("day").is_between(f.test_start, f.test_end))["TRANSACTION_ID"]
        got = preds.filter(pl.col("fold") == f.index)["TRANSACTION_ID"]
        assert sorted(got.to_list()) == sorted(ids.to_list())
    # every forwarded transaction ranks above every other one
    fwd = preds.filter(pl.col("stage1_flagged") == 1)["score"]
    rest = preds.filter(pl.col("stage1_flagged") == 0)["score"]
    assert fwd.min() > rest.max()


def test_metrics_recompute_from_predictions(evaluated):
    data, out, metrics, _ = evaluated
    preds = pl.read_csv(out / "predictions.csv")
    df = pl.read_csv(data).with_columns(
        pl.col("TX_DATETIME").str.to_date("%Y-%m-%dT%H:%M:%S").alias("day")
    )
    for f in metrics["folds"]:
        test = preds.filter(pl.col("fold") == f["fold"]).join(
            df.select("TRANSACTION_ID", "CUSTOMER_ID", "day", "TX_FRAUD"), on="TRANSACTION_ID"
        )
        start = pl.Series([f["train_start"]]).str.to_date()[0]
        kept = remove_known_cards(test, df, start)
        assert kept.height == f["evaluated_rows"]
        y, s = kept["TX_FRAUD"].to_numpy(), kept["score"].to_numpy()
        assert auc_roc(y, s) == pytest.approx(f["auc_roc"], abs=1e-6)
        assert average_precision(y, s) == pytest.approx(f["average_precision"], abs=1e-6)
        cp, _ = card_precision_at_k(kept.select("CUSTOMER_ID", "day", "score", "TX_FRAUD"))
        assert cp == pytest.approx(f["card_precision_at_100"], abs=1e-6)
        flagged = kept["stage1_flagged"].to_numpy() == 1
        assert flagged.mean() == pytest.approx(f["stage1_forward_rate"], abs=1e-6)


def test_metrics_recompute_stage1_recall_at(evaluated):
    """``stage1_recall_at`` from ``predictions.csv`` and the stand-in's STAGE1_SCORE: the top
    ceil(share * rows) evaluated rows by score, ties in stream order."""
    data, out, metrics, _ = evaluated
    preds = pl.read_csv(out / "predictions.csv")
    df = pl.read_csv(data)
    screened = fake_screen(run.read_handbook(data), None).select("TRANSACTION_ID", "STAGE1_SCORE")
    df = df.with_columns(pl.col("TX_DATETIME").str.to_date("%Y-%m-%dT%H:%M:%S").alias("day"))
    for f in metrics["folds"]:
        test = (
            preds.filter(pl.col("fold") == f["fold"])
            .join(
                df.select("TRANSACTION_ID", "CUSTOMER_ID", "day", "TX_FRAUD"), on="TRANSACTION_ID"
            )
            .join(screened, on="TRANSACTION_ID")
            .sort("TRANSACTION_ID")  # ids are in stream order
        )
        start = pl.Series([f["train_start"]]).str.to_date()[0]
        kept = remove_known_cards(test, df, start).sort("TRANSACTION_ID")
        ranked = kept.sort("STAGE1_SCORE", descending=True, maintain_order=True)
        for q, want in f["stage1_recall_at"].items():
            k = -(-round(float(q) * 100) * kept.height // 100)  # ceil, in integers
            got = ranked.head(k)["TX_FRAUD"].sum() / kept["TX_FRAUD"].sum()
            assert got == pytest.approx(want, abs=1e-6), q


def _stage1_frame(**extra):
    # frauds: scenario 1 forwarded, scenario 2 at a terminal with no known fraud (hidden by the
    # label delay) not forwarded, scenario 2 at a known terminal not forwarded, scenario 3
    # forwarded; four genuine rows, one forwarded
    return pl.DataFrame(
        {
            "TX_FRAUD": [1, 1, 1, 1, 0, 0, 0, 0],
            "FLAGGED": [True, False, False, True, True, False, False, False],
            "STAGE1_SCORE": [0.9, 0.95, 0.2, 0.8, 0.7, 0.1, 0.3, 0.05],
            "TERMINAL_NB_FRAUD_30DAY_WINDOW": [0, 0, 3, 0, 0, 0, 1, 0],
            **extra,
        }
    )


def test_stage1_recall_reachable_excludes_invisible_frauds():
    frame = _stage1_frame(TX_FRAUD_SCENARIO=[1, 2, 2, 3, 0, 0, 0, 0])
    got = measure.stage1_measure(frame)
    assert got["stage1_forward_rate"] == 3 / 8
    assert got["stage1_recall"] == 2 / 4
    assert got["stage1_recall_reachable"] == 2 / 3  # the hidden fraud (row 1) left out
    # top 0.2 of 8 rows is 2 (scores 0.95, 0.9): 2 of 4 frauds, 1 of the 3 reachable ones
    assert got["stage1_recall_at"]["0.2"] == 0.5
    assert got["stage1_recall_reachable_at"]["0.2"] == pytest.approx(1 / 3)
    assert got["stage1_recall_reachable_at"]["0.01"] == 0.0  # 1 row: the hidden fraud


def test_stage1_recall_reachable_needs_the_scenario():
    got = measure.stage1_measure(_stage1_frame())
    assert got["stage1_recall"] == 0.5
    assert got["stage1_recall_reachable"] is None and got["stage1_recall_reachable_at"] is None


def test_stream_forwarding_in_stream_order():
    # out of time order on input: a burst of forwards once sorted by ts_ms
    n = 12_000
    ts = np.arange(n)
    flagged = np.zeros(n, dtype=bool)
    flagged[2_000:3_000] = True
    perm = np.random.default_rng(0).permutation(n)
    screened = pl.DataFrame({"ts_ms": ts[perm], "FLAGGED": flagged[perm]})
    got = run._stream(screened)
    assert got == {"rows": n, "forward_rate": 1_000 / n, "max_forward_share_5000": 0.2}
    small = run._stream(pl.DataFrame({"ts_ms": [2, 1, 1], "FLAGGED": [True, False, True]}))
    assert small["max_forward_share_5000"] == pytest.approx(2 / 3)


def test_evaluate_with_scenarios_gives_reachable_recall(tmp_path, monkeypatch):
    data = tmp_path / "tx.csv"
    df = simulate(data, days=24, customers=120)
    # scenario 1: big amounts; the other frauds are the compromised terminals' (scenario 2)
    df.with_columns(
        pl.when(pl.col("TX_FRAUD") == 0)
        .then(0)
        .when(pl.col("TX_AMOUNT") > 220)
        .then(1)
        .otherwise(2)
        .alias("TX_FRAUD_SCENARIO")
    ).write_csv(data)
    monkeypatch.setattr(run, "_screen", fake_screen)
    metrics = run.evaluate(data, "handbook-ch3", tmp_path / "o", None, Settings(), rounds=5)
    for part in (metrics["folds"][0], metrics["mean"]):
        assert 0.0 <= part["stage1_recall_reachable"] <= 1.0
        assert list(part["stage1_recall_reachable_at"]) == ["0.01", "0.02", "0.05", "0.1", "0.2"]
    assert metrics["folds"][0]["delay_ceiling"] is not None


def test_train_history_days_and_models_written(tmp_path, monkeypatch):
    data = tmp_path / "tx.csv"
    simulate(data, days=30, customers=150)
    monkeypatch.setattr(run, "_screen", fake_screen)
    m7 = run.evaluate(data, "handbook-ch3", tmp_path / "a", None, Settings(), rounds=10)
    m14 = run.evaluate(
        data, "handbook-ch3", tmp_path / "b", None, Settings(), train_history_days=14, rounds=10
    )
    assert len(m7["folds"]) == 1
    # 30 days: the fold's training week starts on day 3; 14 days back is clipped at day 0
    assert m14["folds"][0]["train_rows"] > m7["folds"][0]["train_rows"]
    assert (tmp_path / "a" / "models" / "fold-0" / "model.ubj").is_file()


def test_stage1_contract_checked(tmp_path, monkeypatch):
    data = tmp_path / "tx.csv"
    simulate(data, days=22, customers=60)
    monkeypatch.setattr(run, "_screen", lambda df, *a: fake_screen(df, None).drop("FLAGGED"))
    with pytest.raises(run.DataError, match="FLAGGED"):
        run.evaluate(data, "handbook-ch3", tmp_path / "o", None, Settings(), rounds=5)


def test_model_features_in_screen_output():
    df = pl.DataFrame(
        {
            "TRANSACTION_ID": [0],
            "ts_ms": [0],
            "CUSTOMER_ID": [1],
            "TERMINAL_ID": [2],
            "TX_AMOUNT": [10.0],
            "TX_FRAUD": [0],
        }
    )
    assert set(MODEL_FEATURES) <= set(fake_screen(df, None).columns)


def test_with_the_real_stage1(tmp_path):
    """The same run through streams.stage1.history.screen_history (no stand-in)."""
    data = tmp_path / "tx.csv"
    simulate(data, days=24, customers=120)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "big.yaml").write_text(
        "rules:\n"
        "  - id: big_amount\n"
        "    description: large payment\n"
        "    when: TX_AMOUNT > 200\n"
        "    action: flag\n"
        "    score: 0.9\n"
        "    reason: BIG_AMOUNT\n"
    )
    metrics = run.evaluate(data, "handbook-ch3", tmp_path / "out", rules, Settings(), rounds=10)
    fold = metrics["folds"][0]
    assert 0.0 <= fold["stage1_forward_rate"] <= 1.0
    preds = pl.read_csv(tmp_path / "out" / "predictions.csv")
    assert preds.height == fold["test_rows"]
    assert "big_amount" in (tmp_path / "out" / "report.md").read_text()


def test_models_come_from_the_search_per_fold(tmp_path, monkeypatch):
    """Without fixed rounds each fold's model comes from the seeded search on its own training
    window (validation: its last days), and the handbook reference is measured beside it."""
    data = tmp_path / "tx.csv"
    simulate(data, days=56, customers=100)  # folds' training weeks start on days 14 … 35
    monkeypatch.setattr(run, "_screen", fake_screen)
    space = SearchSpace(
        max_depth=(2,), learning_rate=(0.3,), scale_pos_weight=(1.0,), max_rounds=20
    )
    monkeypatch.setattr(search, "SearchSpace", lambda: space)
    metrics = run.evaluate(data, "handbook-ch5", tmp_path / "o", None, Settings(), rounds=None)
    assert metrics["options"]["rounds"] == "searched per fold"
    for f in metrics["folds"]:
        assert 1 <= f["rounds"] <= 20 and f["params"]["max_depth"] == 2
        assert set(f["handbook_reference"]) >= {"auc_roc", "average_precision"}
    meta = json.loads((tmp_path / "o" / "models" / "fold-0" / "metadata.json").read_text())
    assert meta["training"]["validation_days"] == 2  # a 7-day window: its last two days
    assert sum(t["chosen"] for t in meta["search"]["trials"]) == 1
    with pytest.raises(run.DataError, match="unknown feature set"):
        run.evaluate(data, "handbook-ch3", tmp_path / "p", None, Settings(), features="nope")


def test_hidden_by_delay_follows_each_compromise_from_its_first_fraud():
    """A scenario-2 fraud is hidden until the first fraud of its own compromise (a run of
    frauds at the terminal with no genuine payment between) is a label delay old."""
    from streams.evaluation.ceiling import hidden_by_delay

    day = 86_400_000
    df = pl.DataFrame(
        {
            "TERMINAL_ID": ["a"] * 6 + ["b"] * 2,
            "ts_ms": [0, day, 3 * day, 8 * day, 9 * day, 20 * day, 0, 10 * day],
            "TX_FRAUD": [0, 1, 1, 1, 0, 1, 1, 1],
            "TX_FRAUD_SCENARIO": [0, 2, 2, 2, 0, 2, 3, 2],
        }
    )
    # a: the compromise from day 1 is known from day 8 on; a genuine payment on day 9 ends it,
    # so day 20 starts a new one (hidden). b: a card fraud (scenario 3) is not a compromise of
    # the terminal, and the compromise starting on day 10 is hidden.
    expected = [False, True, True, False, False, True, False, True]
    assert hidden_by_delay(df).to_list() == expected
    assert hidden_by_delay(df.reverse()).to_list() == expected[::-1]
