"""What a rule and a rule set are once loaded: immutable, located, compiled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from streams.features.names import RULE_FIELDS
from streams.rules.attributes import EMPTY_SCHEMA, AttributeSchema
from streams.rules.engine import Plan, RuleResult, build_plan, evaluate_plan
from streams.rules.expr import Catalog, list_reference
from streams.rules.lists import ValueList
from streams.schema import Transaction

# What a hit does (precedence: block > allow > review > flag > tag; see streams.rules.engine):
# `flag` forwards to stage 2, `review` forwards and makes stage 2 decide at least `review`,
# `block` declines at stage 1, `allow` approves at stage 1 (never forwarded), `tag` records.
Action = Literal["flag", "tag", "review", "block", "allow"]
ACTIONS: tuple[Action, ...] = ("flag", "tag", "review", "block", "allow")
Expect = Literal["fire", "no_fire"]
ExampleValue = float | str | bool | None
COMPUTED_FIELDS = frozenset(RULE_FIELDS)  # what the feature code computes; the rest are inputs


@dataclass(frozen=True)
class Example:
    """A worked case written under a rule: these field values should (not) make it fire."""

    fields: Mapping[str, ExampleValue]
    expect: Expect
    file: str
    line: int

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    when: str
    action: Action
    score: float
    reason: str
    expr: pl.Expr = field(compare=False, repr=False)
    enabled: bool = True
    shadow: bool = False
    examples: tuple[Example, ...] = ()
    file: str = ""
    line: int = 0

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def on_attributes(self) -> bool:
        """Whether the condition names a transaction attribute or a list."""
        return not COMPUTED_FIELDS.issuperset(self.expr.meta.root_names())

    @property
    def acts(self) -> bool:
        """Whether a hit of this rule changes what happens (enabled and not in shadow mode)."""
        return self.enabled and not self.shadow


@dataclass(frozen=True)
class RuleSet:
    """The rules of one directory at one moment; ``version`` changes whenever a file does."""

    rules: tuple[Rule, ...]
    version: str
    source: Path
    files: tuple[str, ...] = ()
    schema: AttributeSchema = EMPTY_SCHEMA
    lists: Mapping[str, ValueList] = field(default_factory=dict)
    plan: Plan = field(init=False, repr=False, compare=False)
    # the attribute and list columns the enabled rules name (beyond the computed fields)
    inputs: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = build_plan(self.rules)
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "inputs", tuple(sorted(plan.fields - COMPUTED_FIELDS)))

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules)

    def get(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.schema, frozenset(self.lists))

    def input_columns(self, txs: Sequence[Transaction], ts: np.ndarray) -> list[pl.Series]:
        """The attribute and list-membership columns the rules name, for a batch (a list
        entry's expiry is compared with each transaction's event time ``ts``)."""
        if not self.inputs:
            return []
        schema = self.schema
        values: dict[str, Sequence[Any]] = {}
        out = []
        for name in self.inputs:
            ref = list_reference(name)
            field_name = name if ref is None else ref[1]
            if field_name not in values:
                values[field_name] = schema.values(field_name, txs, ts)
            if ref is None:
                out.append(schema.column(name, values[name]))
            else:
                hits = self.lists[ref[0]].hits(values[field_name], ts)
                out.append(pl.Series(name, hits, dtype=pl.Boolean))
        return out

    def evaluate(self, frame: pl.DataFrame) -> RuleResult:
        """Judge every row of a micro-batch with every enabled rule (one polars pass)."""
        return evaluate_plan(self.plan, frame, self.version)
