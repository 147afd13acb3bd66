"""Running the worked examples written under each rule (``fraudstream rules test``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from streams.features.names import RULE_FIELDS
from streams.rules.expr import list_reference
from streams.rules.lists import ValueList
from streams.rules.model import COMPUTED_FIELDS, Example, ExampleValue, Expect, Rule, RuleSet


@dataclass(frozen=True)
class ExampleOutcome:
    rule_id: str
    location: str  # file:line of the example
    expected: Expect
    got: Expect
    passed: bool
    fields: Mapping[str, ExampleValue]


def example_frame(
    examples: Iterable[Example],
    names: Iterable[str] = (),
    lists: Mapping[str, ValueList] | None = None,
) -> pl.DataFrame:
    """One row per example: every computed rule field (Float64, 0 unless the example sets it),
    then the attributes ``names`` (null unless set) and the list-membership columns among them,
    judged with today's lists (an entry expired today does not match)."""
    rows = list(examples)
    columns: dict[str, pl.Series] = {
        name: pl.Series(name, [ex.fields.get(name, 0.0) for ex in rows], dtype=pl.Float64)
        for name in RULE_FIELDS
    }
    refs = []
    for name in names:
        if name in COMPUTED_FIELDS:
            continue
        ref = list_reference(name)
        if ref is not None:
            refs.append((name, ref))
            continue
        columns[name] = pl.Series(name, [ex.fields.get(name) for ex in rows], strict=False)
    now = np.full(len(rows), int(time.time() * 1000), dtype=np.int64)
    for name, (list_name, field_name) in refs:
        values = pl.Series(field_name, [ex.fields.get(field_name) for ex in rows], strict=False)
        value_list = (lists or {}).get(list_name, ValueList(list_name, ""))
        columns[name] = value_list.contains(values, now).alias(name)
    return pl.DataFrame(list(columns.values()))


def run_examples(
    rules: RuleSet | Iterable[Rule], lists: Mapping[str, ValueList] | None = None
) -> list[ExampleOutcome]:
    """Judge each example with its own rule, enabled or not, shadow or not."""
    outcomes: list[ExampleOutcome] = []
    if isinstance(rules, RuleSet):
        lists = rules.lists
    for rule in rules.rules if isinstance(rules, RuleSet) else rules:
        if not rule.examples:
            continue
        frame = example_frame(rule.examples, rule.expr.meta.root_names(), lists)
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


def example_problems(
    rules: RuleSet | Iterable[Rule], lists: Mapping[str, ValueList] | None = None
) -> list[str]:
    """``file:line: message`` for every example that does not give what it expects."""
    return [
        f"{o.location}: rule `{o.rule_id}`: example expects {o.expected}, got {o.got}"
        for o in run_examples(rules, lists)
        if not o.passed
    ]
