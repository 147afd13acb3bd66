"""What a rule and a rule set are once loaded: immutable, located, compiled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from streams.rules.engine import Plan, RuleResult, build_plan, evaluate_plan

Action = Literal["flag", "tag"]
ACTIONS: tuple[Action, ...] = ("flag", "tag")
Expect = Literal["fire", "no_fire"]


@dataclass(frozen=True)
class Example:
    """A worked case written under a rule: these field values should (not) make it fire."""

    fields: Mapping[str, float | None]
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
    plan: Plan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", build_plan(self.rules))

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

    def evaluate(self, frame: pl.DataFrame) -> RuleResult:
        """Judge every row of a micro-batch with every enabled rule (one polars pass)."""
        return evaluate_plan(self.plan, frame, self.version)
