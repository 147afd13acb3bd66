"""The Bayes bound on simulated data: the oracle's posterior ranks card compromises' frauds."""

from __future__ import annotations

import numpy as np
import pytest

from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.evaluation.bayes_bound import bound, oracle_scores
from streams.evaluation.handbook_metrics import auc_roc


@pytest.fixture(scope="module")
def data():
    frame = simulate(
        customers=400,
        terminals=600,
        days=60,
        seed=7,
        compromised_cards_per_day=2,
        compromised_card_multiplier=3.0,
    )
    return read_handbook_frame(frame)


def test_the_oracle_puts_amount_and_reachable_terminal_frauds_first(data):
    scores = oracle_scores(data, multiplier=3.0, share=1 / 3, days=14, cards_per_day=2)
    scenario = data["TX_FRAUD_SCENARIO"].to_numpy()
    assert (scores[scenario == 1] == 2.0).all()
    rest = scores[scenario != 1]
    assert ((rest >= 0) & (rest <= 1)).sum() + (rest == 2.0).sum() == len(rest)


def test_the_posterior_separates_card_compromises_from_their_cards_genuine_payments(data):
    scores = oracle_scores(data, multiplier=3.0, share=1 / 3, days=14, cards_per_day=2)
    scenario = data["TX_FRAUD_SCENARIO"].to_numpy()
    compromised = np.isin(
        data["CUSTOMER_ID"].to_numpy(), data.filter(data["TX_FRAUD_SCENARIO"] == 3)["CUSTOMER_ID"]
    )
    rows = compromised & ((scenario == 3) | (scenario == 0))
    assert (scenario[rows] == 3).sum() > 50
    # the same cards' genuine payments: only their amounts tell the frauds apart
    assert auc_roc(scenario[rows] == 3, scores[rows]) > 0.8
    # a wrong multiplier (no compromise at all) gives a worse ranking, not a better one
    flat = oracle_scores(data, multiplier=1.0, share=1 / 3, days=14, cards_per_day=2)
    assert auc_roc(scenario[rows] == 3, flat[rows]) < 0.6


def test_the_bound_is_a_recall_per_share_and_fold(data):
    result = bound(data, multiplier=3.0, share=1 / 3, days=14, cards_per_day=2)
    assert len(result["folds"]) >= 1
    mean = result["mean"]
    assert list(mean) == ["0.01", "0.02", "0.05", "0.1", "0.2"]
    values = [mean[k] for k in mean]
    assert all(0 <= v <= 1 for v in values)
    assert values == sorted(values)  # forwarding more never catches less
    assert mean["0.2"] > 0.9


def test_the_past_card_mean_reads_no_later_payment(data):
    """``card_mean="past"``: a row's score depends only on its card's earlier payments, so
    changing every amount after a moment changes no score before it."""
    import polars as pl

    cut = int(data["ts_ms"].quantile(0.6))
    later = pl.col("ts_ms") > cut
    changed = data.with_columns(
        pl.when(later).then(pl.col("TX_AMOUNT") * 7).otherwise(pl.col("TX_AMOUNT"))
    )
    args = {"multiplier": 3.0, "share": 1 / 3, "days": 14, "cards_per_day": 2}
    before = (data["ts_ms"] <= cut).to_numpy()
    past = oracle_scores(data, card_mean="past", **args)
    assert np.array_equal(past[before], oracle_scores(changed, card_mean="past", **args)[before])
    # the true mean reads every genuine payment, later ones included
    true = oracle_scores(data, **args)
    assert not np.array_equal(true[before], oracle_scores(changed, **args)[before])
