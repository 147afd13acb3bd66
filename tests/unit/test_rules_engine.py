"""Judging batches: flag / tag / shadow / disabled semantics, scores, reasons, hits, nulls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from streams.errors import RuleError
from streams.features.names import RULE_FIELDS
from streams.rules import RuleSet, load_rules

RULES = """\
rules:
  - {id: big, description: d, when: TX_AMOUNT > 220, action: flag, score: 0.9, reason: LARGE}
  - {id: spike, description: d, when: CARD_AMOUNT_RATIO_30DAY >= 3, action: flag, score: 0.7,
     reason: SPIKE}
  - {id: night, description: d, when: TX_HOUR < 6, action: tag, score: 0.2, reason: NIGHT}
  - {id: night_big, description: d, when: TX_HOUR < 6 AND TX_AMOUNT > 100, action: tag,
     score: 0.95, reason: NIGHT}
  - {id: trial, description: d, when: TX_AMOUNT > 50, action: flag, score: 1.0, reason: TRIAL,
     shadow: true}
  - {id: trial_tag, description: d, when: TX_HOUR >= 22, action: tag, score: 0.5, reason: LATE,
     shadow: true}
  - {id: off, description: d, when: TX_AMOUNT > 0, action: flag, score: 1.0, reason: OFF,
     enabled: false}
"""


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    (tmp_path / "r.yaml").write_text(RULES)
    return load_rules(tmp_path)


FRAME = pl.DataFrame(
    {
        "TX_AMOUNT": [10.0, 300.0, 120.0, 60.0, None, 30.0],
        "CARD_AMOUNT_RATIO_30DAY": [1.0, 1.0, 1.0, 4.0, 9.0, None],
        "TX_HOUR": [12.0, 12.0, 3.0, 23.0, 2.0, 12.0],
    }
)


def test_semantics(ruleset: RuleSet) -> None:
    result = ruleset.evaluate(FRAME)
    assert len(result) == 6 and result.version == ruleset.version
    assert result.flag.tolist() == [False, True, False, True, True, False]
    assert result.score.tolist() == [0.0, 0.9, 0.95, 0.7, 0.7, 0.0]
    assert result.fired == [[], ["big"], ["night_big", "night"], ["spike"], ["spike", "night"], []]
    assert result.reasons == [[], ["LARGE"], ["NIGHT"], ["SPIKE"], ["SPIKE", "NIGHT"], []]
    assert result.shadow_fired == [[], ["trial"], ["trial"], ["trial", "trial_tag"], [], []]
    assert result.hits == {
        "big": 1,
        "spike": 2,
        "night": 2,
        "night_big": 1,
        "trial": 3,
        "trial_tag": 1,
    }
    assert result.flag.dtype == np.bool_ and result.score.dtype == np.float64


def test_per_row_lists_are_independent(ruleset: RuleSet) -> None:
    result = ruleset.evaluate(FRAME)
    result.fired[0].append("x")
    assert result.fired[5] == [] and result.shadow_fired[0] == [] and result.reasons[0] == []


def test_int_columns_and_extra_columns(ruleset: RuleSet) -> None:
    frame = pl.DataFrame(
        {"TX_AMOUNT": [300, 10], "CARD_AMOUNT_RATIO_30DAY": [1, 1], "TX_HOUR": [12, 1], "x": [1, 2]}
    )
    assert ruleset.evaluate(frame).fired == [["big"], ["night"]]


def test_missing_field_is_a_clear_error(ruleset: RuleSet) -> None:
    with pytest.raises(RuleError, match="lacks field\\(s\\) used by rules: TX_HOUR"):
        ruleset.evaluate(FRAME.drop("TX_HOUR"))


def test_empty_batch(ruleset: RuleSet) -> None:
    result = ruleset.evaluate(FRAME.head(0))
    assert len(result) == 0 and result.fired == [] and result.hits["big"] == 0


def test_all_disabled(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        RULES.replace("score: 0.9, reason: LARGE", "score: 0.9, reason: LARGE, enabled: false")
    )
    ruleset = load_rules(tmp_path)
    only = RuleSet(tuple(r for r in ruleset.rules if not r.enabled), "v", tmp_path)
    result = only.evaluate(FRAME)
    assert not result.flag.any() and result.hits == {} and result.fired == [[]] * 6


def test_matches_a_row_by_row_reference(ruleset: RuleSet) -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    amount = rng.gamma(2.0, 60.0, n)
    ratio = rng.lognormal(0.0, 0.6, n)
    hour = rng.integers(0, 24, n).astype(float)
    result = ruleset.evaluate(
        pl.DataFrame({"TX_AMOUNT": amount, "CARD_AMOUNT_RATIO_30DAY": ratio, "TX_HOUR": hour})
    )
    for i in range(n):
        live = {
            "big": amount[i] > 220,
            "spike": ratio[i] >= 3,
            "night": hour[i] < 6,
            "night_big": hour[i] < 6 and amount[i] > 100,
        }
        fired = {k for k, v in live.items() if v}
        assert set(result.fired[i]) == fired
        assert result.flag[i] == (live["big"] or live["spike"])
        scores = {"big": 0.9, "spike": 0.7, "night": 0.2, "night_big": 0.95}
        assert result.score[i] == max([scores[k] for k in fired], default=0.0)
        shadow = [k for k, v in (("trial", amount[i] > 50), ("trial_tag", hour[i] >= 22)) if v]
        assert result.shadow_fired[i] == shadow
    assert result.hits["trial"] == int((amount > 50).sum())


def test_default_rules_on_the_handbook_patterns() -> None:
    ruleset = load_rules(Path(__file__).parents[2] / "rules")
    habit = {"CUSTOMER_ID_NB_TX_30DAY_WINDOW": 40.0}
    rows = [
        # scenario 1 (an absolute amount): no rule, the online model learns what is large
        {"TX_AMOUNT": 250.0, "CARD_AMOUNT_RATIO_MEDIAN_30DAY": 1.2, **habit},
        # scenario 2: tagged (the online model weighs the terminal features)
        {"TERMINAL_ID_RISK_1DAY_WINDOW": 1.0, "TERMINAL_ID_NB_TX_1DAY_WINDOW": 1.0},
        {"TX_AMOUNT": 150.0, "CARD_AMOUNT_RATIO_MEDIAN_30DAY": 5.0, **habit},  # scenario 3
        {"TX_AMOUNT": 40.0, "CARD_AMOUNT_RATIO_MEDIAN_30DAY": 1.0, **habit},  # ordinary
    ]
    frame = pl.DataFrame(
        [{name: row.get(name, 0.0) for name in RULE_FIELDS} for row in rows],
        schema=dict.fromkeys(RULE_FIELDS, pl.Float64),
    )
    result = ruleset.evaluate(frame)
    assert result.flag.tolist() == [False, False, True, False]
    assert result.reasons[2] == ["AMOUNT_SPIKE"]
    assert "RISKY_TERMINAL" in result.reasons[1]
