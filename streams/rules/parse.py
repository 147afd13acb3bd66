"""One rule file's text to rules, or to every problem found in it as ``file:line: message``.

The round-trip YAML loader keeps the line of every node, so each problem points at the line of
the key or value at fault. Files are only read, never written back.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from streams.errors import RuleError
from streams.features.names import RULE_FIELDS
from streams.rules.expr import DEFAULT_CATALOG, Catalog, compile_condition
from streams.rules.located import Located, bool_value, is_number, text_value
from streams.rules.model import ACTIONS, Action, Example, ExampleValue, Expect, Rule

REQUIRED_KEYS = ("id", "description", "when", "action", "score", "reason")
OPTIONAL_KEYS = ("enabled", "shadow", "examples")
EXAMPLE_KEYS = ("fields", "expect")
EXPECTS: tuple[Expect, ...] = ("fire", "no_fire")
ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
REASON_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
_FIELDS = frozenset(RULE_FIELDS)


def _example_value(name: str, value: object, catalog: Catalog) -> tuple[ExampleValue, str | None]:
    """An example's value for a field, or why it cannot be one (its type must be the field's)."""
    if value is None:
        return None, None
    if name in _FIELDS:
        if not is_number(value):
            return None, f"`{name}` must be a number"
        return float(value), None  # type: ignore[arg-type]
    kind = catalog.attributes[name]
    if kind == pl.Utf8 and isinstance(value, str | int) and not isinstance(value, bool):
        return str(value), None
    if kind == pl.Boolean and isinstance(value, bool):
        return value, None
    if kind in (pl.Float64, pl.Int64) and is_number(value):
        return float(value), None  # type: ignore[arg-type]
    return None, f"`{name}` must be a {kind} value, got {value!r}"


def _examples(rule: Located, catalog: Catalog) -> tuple[Example, ...]:
    seq = rule.node.get("examples")
    if seq is None:
        return ()
    if not isinstance(seq, CommentedSeq):
        rule.at("examples", "`examples` must be a list of {fields: {...}, expect: fire|no_fire}")
        return ()
    out: list[Example] = []
    for i, item in enumerate(seq):
        line = seq.lc.item(i)[0] + 1
        if not isinstance(item, CommentedMap):
            rule.problems.append(f"{rule.label}:{line}: {rule.name}: example must be a mapping")
            continue
        ex = Located(rule.label, item, line, f"{rule.name} example {i + 1}")
        ex.check_keys(EXAMPLE_KEYS, ())
        fields = item.get("fields")
        values: dict[str, ExampleValue] = {}
        if isinstance(fields, CommentedMap):
            for name, value in fields.items():
                pos = fields.lc.key(name)[0] + 1
                if not catalog.known(name):
                    ex.problems.append(
                        f"{rule.label}:{pos}: {ex.name}: unknown field `{name}`; "
                        f"known fields: {', '.join(catalog.names())}"
                    )
                    continue
                typed, problem = _example_value(str(name), value, catalog)
                if problem is not None:
                    ex.problems.append(f"{rule.label}:{pos}: {ex.name}: {problem}")
                else:
                    values[str(name)] = typed
        elif "fields" in item:
            ex.at("fields", "`fields` must be a mapping of field name to value")
        expect = item.get("expect")
        if "expect" in item and expect not in EXPECTS:
            ex.at("expect", f"`expect` must be `fire` or `no_fire`, got {expect!r}")
        rule.problems.extend(ex.problems)
        if not ex.problems:
            out.append(Example(values, "fire" if expect == "fire" else "no_fire", rule.label, line))
    return tuple(out)


def _rule(
    label: str, node: Any, line: int, index: int, catalog: Catalog
) -> tuple[Rule | None, list[str]]:
    if not isinstance(node, CommentedMap):
        return None, [
            f"{label}:{line}: rule #{index}: must be a mapping (id, description, when, ...)"
        ]
    rid = node.get("id")
    rule = Located(label, node, line, f"rule `{rid}`" if isinstance(rid, str) else f"rule #{index}")
    rule.check_keys(REQUIRED_KEYS, OPTIONAL_KEYS)
    rule_id = text_value(rule, "id", ID_PATTERN, "a letter then letters, digits, `_` or `-`")
    description = text_value(rule, "description")
    reason = text_value(rule, "reason", REASON_PATTERN, "an UPPER_SNAKE_CASE code (max 40 chars)")
    when = text_value(rule, "when")
    expr = None
    if when:
        try:
            expr = compile_condition(when, catalog)
        except RuleError as exc:
            for problem in exc.problems:
                rule.at("when", problem)
    action = node.get("action")
    if "action" in node and action not in ACTIONS:
        rule.at("action", f"bad action {action!r}: must be one of {', '.join(ACTIONS)}")
    score = node.get("score")
    if "score" in node and not (is_number(score) and 0.0 <= score <= 1.0):
        rule.at("score", f"`score` must be a number from 0 to 1, got {score!r}")
    enabled, shadow = bool_value(rule, "enabled", True), bool_value(rule, "shadow", False)
    examples = _examples(rule, catalog)
    if rule.problems or expr is None:
        return None, rule.problems
    return Rule(
        id=rule_id,
        description=description,
        when=when.strip(),
        action=_action(action),
        score=float(score),
        reason=reason,
        expr=expr,
        enabled=enabled,
        shadow=shadow,
        examples=examples,
        file=label,
        line=line,
    ), []


def _action(value: object) -> Action:
    for action in ACTIONS:
        if value == action:
            return action
    raise ValueError(value)  # unreachable: checked against ACTIONS before


def _yaml_problem(label: str, exc: YAMLError) -> str:
    if not isinstance(exc, MarkedYAMLError) or exc.problem_mark is None:
        return f"{label}:1: invalid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    line = exc.problem_mark.line + 1
    message = f"{label}:{line}: invalid YAML: {exc.problem or exc.context}"
    start = exc.context_mark
    if exc.problem and exc.context and start is not None and start.line + 1 != line:
        message += f" ({exc.context} started at line {start.line + 1})"
    return message


def parse_file(
    label: str, text: str, catalog: Catalog = DEFAULT_CATALOG
) -> tuple[list[Rule], list[str]]:
    """The valid rules of one file and the problems of the others (``label`` names the file)."""
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        return [], [_yaml_problem(label, exc)]
    if doc is None:
        return [], [f"{label}:1: the file is empty: expected a `rules:` list"]
    if not isinstance(doc, CommentedMap):
        return [], [f"{label}:1: the top level must be a mapping with a `rules:` list"]
    top = Located(label, doc, 1, "top level")
    top.check_keys(("rules",), ())
    seq = doc.get("rules")
    if "rules" in doc and not isinstance(seq, CommentedSeq):
        top.at("rules", "`rules` must be a list of rules")
    rules: list[Rule] = []
    if isinstance(seq, CommentedSeq):
        for i, node in enumerate(seq):
            rule, problems = _rule(label, node, seq.lc.item(i)[0] + 1, i + 1, catalog)
            top.problems.extend(problems)
            if rule is not None:
                rules.append(rule)
    return rules, top.problems
