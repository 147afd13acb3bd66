"""A new rule set is judged on the worker's recent traffic before it acts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from streams.features.names import MODEL_FEATURES
from streams.rules.backtest import Backtest, rules_over_budget
from streams.rules.loader import load_rules
from streams.schema import Transaction
from streams.stage1.recent import RecentTraffic
from streams.stage1.screen import ScreenedBatch

AMOUNT = MODEL_FEATURES.index("TX_AMOUNT")


def _batch(amounts: np.ndarray, start: int = 0) -> ScreenedBatch:
    n = len(amounts)
    X = np.zeros((n, len(MODEL_FEATURES)))
    X[:, AMOUNT] = amounts
    txs = [
        Transaction(str(start + i), "c", "t", float(a), 1000 * i, {}) for i, a in enumerate(amounts)
    ]
    zeros = np.zeros(n)
    return ScreenedBatch(
        txs=txs,
        X=X,
        anomaly=zeros,
        probability=zeros,
        rule_score=zeros,
        stage1_score=zeros,
        flagged=np.zeros(n, dtype=bool),
        blocked=np.zeros(n, dtype=bool),
        allowed=np.zeros(n, dtype=bool),
        review=np.zeros(n, dtype=bool),
        fired=[[] for _ in range(n)],
        reasons=[[] for _ in range(n)],
        shadow_fired=[[] for _ in range(n)],
        hits={},
        rules_version="v",
    )


def _rules(tmp_path: Path, threshold: float):
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        f"  - {{id: big, description: d, when: TX_AMOUNT > {threshold}, action: flag, "
        "score: 0.5, reason: BIG}\n"
    )
    return load_rules(tmp_path)


def test_rule_share_on_the_last_transactions(tmp_path: Path) -> None:
    recent = RecentTraffic(size=4000)
    assert recent.rule_share(_rules(tmp_path, 0)) is None  # nothing seen yet
    recent.add(_batch(np.full(3000, 500.0)))  # pushed out by what follows
    for k in range(5):
        recent.add(_batch(np.arange(1000, dtype=float), start=1000 * k))  # 0 .. 999 each time
    assert recent.filled == 4000
    assert recent.rule_share(_rules(tmp_path, 899)) == 0.1
    assert recent.rule_share(_rules(tmp_path, 499)) == 0.5


def test_backtest_warns_when_rules_alone_exceed_the_maximum() -> None:
    def result(rule_forwarded: int) -> Backtest:
        return Backtest("v", 1000, 10, 0, 0, rule_forwarded, 0, pl.DataFrame())

    assert rules_over_budget(result(100), 0.10) is None
    warning = rules_over_budget(result(150), 0.10)
    assert warning is not None and "15.00%" in warning and "10.00%" in warning


def test_rule_share_of_rules_over_attributes_and_lists(tmp_path: Path) -> None:
    """The recent transactions' attributes are judged too; an allow list takes its rows."""
    (tmp_path / "schema.yaml").write_text("fields:\n  channel: {type: string}\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "trusted.csv").write_text("value\nt-ok\n")
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - {id: online, description: d, when: channel = 'ecom', action: flag, score: 0.5, "
        "reason: ONLINE}\n"
        "  - {id: ok, description: d, when: terminal_id IN LIST trusted, action: allow, "
        "score: 0, reason: OK}\n"
    )
    rules = load_rules(tmp_path)
    recent = RecentTraffic(size=2000)
    batch = _batch(np.zeros(2000))
    for i, tx in enumerate(batch.txs):  # half online, a quarter of those at a trusted terminal
        tx.raw["channel"] = "ecom" if i % 2 else "pos"
        tx.terminal_id = "t-ok" if i % 4 == 1 else "t"
    recent.add(batch)
    assert recent.rule_share(rules) == 0.25
