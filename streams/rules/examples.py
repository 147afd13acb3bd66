"""Running the worked examples written under each rule (``fraudstream rules test``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl

from streams.features.names import RULE_FIELDS
from streams.rules.model import Example, Expect, Rule, RuleSet


@dataclass(frozen=True)
class ExampleOutcome:
    rule_id: str
    location: str  # file:line of the example
    expected: Expect
    got: Expect
    passed: bool
    fields: Mapping[str, float | None]


def example_frame(examples: Iterable[Example]) -> pl.DataFrame:
    """One row per example: every rule field, Float64, 0 unless the example sets it."""
    rows = list(examples)
    columns = {name: [ex.fields.get(name, 0.0) for ex in rows] for name in RULE_FIELDS}
    return pl.DataFrame(columns, schema=dict.fromkeys(RULE_FIELDS, pl.Float64))


def run_examples(rules: RuleSet | Iterable[Rule]) -> list[ExampleOutcome]:
    """Judge each example with its own rule, enabled or not, shadow or not."""
    outcomes: list[ExampleOutcome] = []
    for rule in rules.rules if isinstance(rules, RuleSet) else rules:
        if not rule.examples:
            continue
        frame = example_frame(rule.examples)
        fired = frame.select(rule.expr.fill_null(False).alias("fired")).to_series().to_list()
        for example, hit in zip(rule.examples, fired, strict=True):
            got: Expect = "fire" if hit else "no_fire"
            outcomes.append(
                ExampleOutcome(
                    rule.id,
                    example.location,
                    example.expect,
                    got,
                    got == example.expect,
                    example.fields,
                )
            )
    return outcomes


def example_problems(rules: RuleSet | Iterable[Rule]) -> list[str]:
    """``file:line: message`` for every example that does not give what it expects."""
    return [
        f"{o.location}: rule `{o.rule_id}`: example expects {o.expected}, got {o.got}"
        for o in run_examples(rules)
        if not o.passed
    ]
