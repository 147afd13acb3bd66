"""Rule conditions: a small, checked subset of SQL expressions, compiled to polars.

A condition is checked token by token before polars ever sees it: only field names, numbers,
short strings, operators and an allow-list of keywords and functions get through. Nothing is
ever handed to Python ``eval``/``exec``. The compiled expression must then name known fields
only and evaluate to a boolean on a typed sample frame.
"""

from __future__ import annotations

import difflib
import re

import polars as pl

from streams.errors import RuleError
from streams.features.names import RULE_FIELDS

MAX_EXPRESSION_CHARS = 2000
MAX_STRING_CHARS = 200

KEYWORDS = frozenset(
    {"AND", "OR", "NOT", "IN", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "IS", "NULL"}
    | {"TRUE", "FALSE"}
)
# Scalar, row-wise functions only: no aggregates, windows, I/O or casts.
FUNCTIONS = frozenset(
    {"ABS", "SIGN", "LEAST", "GREATEST", "COALESCE", "IFNULL", "NULLIF", "IF"}
    | {"LN", "LOG", "LOG2", "LOG10", "LOG1P", "EXP", "SQRT", "CBRT", "POWER", "POW", "MOD"}
    | {"ROUND", "FLOOR", "CEIL", "CEILING"}
)
FORBIDDEN_KEYWORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "WITH", "UNION", "JOIN", "INTO", "VALUES", "TABLE", "EXISTS"}
    | {"INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "EXEC", "EXECUTE", "OVER"}
)
_FIELDS = frozenset(RULE_FIELDS)

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<string>'(?:[^']|'')*')
    |(?P<quoted>"[^"]*")
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<comment>--|/\*)
    |(?P<op><>|!=|==|<=|>=|[-+*/%=<>(),])""",
    re.VERBOSE,
)


def _unknown_field(name: str) -> str:
    close = difflib.get_close_matches(name.upper(), RULE_FIELDS, n=1, cutoff=0.75)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"unknown field `{name}`{hint}; known fields: {', '.join(RULE_FIELDS)}"


def _bad_char(text: str, pos: int) -> str:
    char = text[pos]
    if char == ".":
        return f"attribute access / dotted names are not allowed (`.` at column {pos + 1})"
    if char == ";":
        return f"`;` is not allowed: a condition is one expression (column {pos + 1})"
    if char in "'\"":
        return f"unterminated quote at column {pos + 1}"
    return f"character {char!r} is not allowed (column {pos + 1})"


def check_condition(text: str) -> list[str]:
    """Every safety problem of a condition's text (empty list when it may be compiled)."""
    if not text.strip():
        return ["`when` is empty"]
    if len(text) > MAX_EXPRESSION_CHARS:
        return [f"`when` is {len(text)} characters long (limit {MAX_EXPRESSION_CHARS})"]
    tokens: list[tuple[str, str]] = []
    problems: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            problems.append(_bad_char(text, pos))
            if text[pos] in "'\"":
                break
            pos += 1
            continue
        kind = match.lastgroup or ""
        if kind == "comment":
            return ["SQL comments are not allowed in `when` (use a YAML `#` comment)"]
        if kind != "ws":
            tokens.append((kind, match.group()))
        pos = match.end()
    for i, (kind, value) in enumerate(tokens):
        is_call = i + 1 < len(tokens) and tokens[i + 1][1] == "("
        if kind == "string" and len(value) - 2 > MAX_STRING_CHARS:
            problems.append(f"string literal longer than {MAX_STRING_CHARS} characters")
        elif kind == "quoted" and value[1:-1] not in _FIELDS:
            problems.append(_unknown_field(value[1:-1]))
        elif kind == "name":
            upper = value.upper()
            if upper in FORBIDDEN_KEYWORDS:
                problems.append(
                    f"forbidden SQL keyword `{value}`: subqueries and statements are not allowed"
                )
            elif upper in KEYWORDS:
                continue
            elif is_call and upper not in FUNCTIONS:
                problems.append(
                    f"unknown function `{value}`; allowed functions: {', '.join(sorted(FUNCTIONS))}"
                )
            elif not is_call and value not in _FIELDS:
                problems.append(_unknown_field(value))
    return list(dict.fromkeys(problems))


def _sample_frame() -> pl.DataFrame:
    """Two typed rows (all zeros, all ones): enough to find the result type and length."""
    return pl.DataFrame(
        {name: [0.0, 1.0] for name in RULE_FIELDS}, schema=dict.fromkeys(RULE_FIELDS, pl.Float64)
    )


_SAMPLE = _sample_frame()


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def compile_condition(text: str) -> pl.Expr:
    """A checked condition as a boolean polars expression; ``RuleError`` lists the problems."""
    problems = check_condition(text)
    if problems:
        raise RuleError(problems)
    try:
        expr = pl.sql_expr(text)
        names = set(expr.meta.root_names())
    except Exception as exc:  # polars raises several SQL error types
        raise RuleError([f"invalid expression: {_first_line(exc)}"]) from None
    unknown = sorted(names - _FIELDS)
    if unknown:
        raise RuleError([_unknown_field(name) for name in unknown])
    if not names:
        raise RuleError(["`when` names no field: a constant condition is not a rule"])
    try:
        result = _SAMPLE.select(expr.alias("when")).to_series()
    except Exception as exc:
        raise RuleError([f"cannot evaluate `when`: {_first_line(exc)}"]) from None
    if result.len() != _SAMPLE.height:
        raise RuleError(["`when` must be judged per transaction (aggregates are not allowed)"])
    if result.dtype != pl.Boolean:
        raise RuleError([f"type mismatch: `when` must be a condition, got {result.dtype}"])
    return expr
