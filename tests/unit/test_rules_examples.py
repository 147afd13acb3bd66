"""The worked examples under each rule: the default rules' all pass, a wrong one is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import RuleError
from streams.rules import load_rules, run_examples, validate_dir

DEFAULT_RULES = Path(__file__).parents[2] / "rules"


def test_default_rules_are_valid_and_their_examples_pass() -> None:
    assert validate_dir(DEFAULT_RULES, check_examples=True) == []
    ruleset = load_rules(DEFAULT_RULES)
    outcomes = run_examples(ruleset)
    assert outcomes and all(o.passed for o in outcomes), [o for o in outcomes if not o.passed]
    assert {o.rule_id for o in outcomes} == set(ruleset.ids)  # every rule has examples
    assert {o.expected for o in outcomes} == {"fire", "no_fire"}


def test_default_rules_cover_flag_tag_and_shadow() -> None:
    rules = load_rules(DEFAULT_RULES).rules
    assert {r.action for r in rules} == {"flag", "tag"}
    assert any(r.shadow for r in rules)
    assert any(r.acts and r.action == "tag" for r in rules)
    reasons = {r.reason for r in rules if r.acts and r.action == "flag"}
    assert {"AMOUNT_SPIKE", "CARD_BURST"} <= reasons
    tagged = {r.reason for r in rules if r.acts and r.action == "tag"}
    assert {"RISKY_TERMINAL", "TERMINAL_FRAUD_CLUSTER"} <= tagged


RULE = """\
rules:
  - id: big
    description: d
    when: TX_AMOUNT > 220 AND TX_HOUR < 6
    action: flag
    score: 0.9
    reason: LARGE
    enabled: false
    examples:
      - fields: {TX_AMOUNT: 300, TX_HOUR: 2}
        expect: fire
      - fields: {TX_AMOUNT: 300}          # TX_HOUR defaults to 0
        expect: no_fire
      - fields: {TX_AMOUNT: null, TX_HOUR: 2}
        expect: no_fire
"""


def test_outcomes_locate_each_example(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(RULE)
    outcomes = run_examples(load_rules(tmp_path))  # disabled rules' examples run too
    assert [(o.rule_id, o.location, o.expected, o.got, o.passed) for o in outcomes] == [
        ("big", f"{f}:10", "fire", "fire", True),
        ("big", f"{f}:12", "no_fire", "fire", False),
        ("big", f"{f}:14", "no_fire", "no_fire", True),
    ]
    assert outcomes[1].fields == {"TX_AMOUNT": 300.0}
    assert validate_dir(tmp_path) == []
    problem = f"{f}:12: rule `big`: example expects no_fire, got fire"
    assert validate_dir(tmp_path, check_examples=True) == [problem]
    with pytest.raises(RuleError) as err:
        load_rules(tmp_path, check_examples=True)
    assert err.value.problems == [problem]
