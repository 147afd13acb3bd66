"""YAML rules: safe SQL conditions judged per micro-batch, validated, hot-reloaded."""

from streams.rules.engine import RuleResult
from streams.rules.examples import ExampleOutcome, run_examples
from streams.rules.expr import compile_condition
from streams.rules.loader import load_rules, validate_dir
from streams.rules.model import Example, Rule, RuleSet
from streams.rules.reload import RuleReloader

__all__ = [
    "Example",
    "ExampleOutcome",
    "Rule",
    "RuleReloader",
    "RuleResult",
    "RuleSet",
    "compile_condition",
    "load_rules",
    "run_examples",
    "validate_dir",
]
