"""`rules backtest` counts what stage 1 did over a history: the same numbers read straight off
the screened rows."""

from __future__ import annotations

import polars as pl

from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.rules.backtest import report_markdown, run_backtest
from streams.settings import Settings
from streams.stage1.history import screen_history
from tests.support import REPO

RULES = REPO / "rules"


def test_backtest_counts_match_the_screened_rows() -> None:
    df = read_handbook_frame(simulate(customers=150, terminals=200, days=40, seed=4))
    settings = Settings()
    start = int(df["ts_ms"].min()) + 20 * 86_400_000  # the last 20 days only
    got = run_backtest(RULES, df, settings, start_ms=start)

    rows = screen_history(df, settings, RULES).filter(pl.col("ts_ms") >= start)
    fraud = rows["TX_FRAUD"] == 1
    assert got.rows == rows.height
    assert got.frauds == int(fraud.sum()) > 0
    assert got.forwarded == int(rows["FLAGGED"].sum()) > 0
    assert got.forwarded_frauds == int((rows["FLAGGED"] & fraud).sum())
    assert 0 < got.rule_forwarded <= got.forwarded
    # shadow rules are measured as if they acted, so their firings count too
    fired = [
        a + b
        for a, b in zip(
            rows["RULES_FIRED"].to_list(), rows["SHADOW_RULES_FIRED"].to_list(), strict=True
        )
    ]
    for rule in got.per_rule.iter_rows(named=True):
        hit = [rule["rule"] in names for names in fired]
        assert rule["hits"] == sum(hit), rule["rule"]
        assert rule["frauds_caught"] == sum(h and f for h, f in zip(hit, fraud, strict=True))
    assert got.per_rule["hits"].sum() > 0
    assert got.per_rule.filter(pl.col("shadow"))["hits"].sum() > 0
    text = report_markdown(got)
    assert f"{got.rows} transactions, {got.frauds} frauds." in text
    for rule in got.per_rule.iter_rows(named=True):
        assert f"| {rule['rule']} | {rule['action']} |" in text
