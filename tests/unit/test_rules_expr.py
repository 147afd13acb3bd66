"""The rule expression language: what it evaluates, and what it refuses before polars sees it."""

from __future__ import annotations

import polars as pl
import pytest

from streams.errors import RuleError
from streams.features.names import RULE_FIELDS
from streams.rules.expr import (
    FUNCTIONS,
    MAX_EXPRESSION_CHARS,
    check_condition,
    compile_condition,
)

FRAME = pl.DataFrame(
    {
        "TX_AMOUNT": [10.0, 250.0, 100.0, None],
        "CARD_AMOUNT_RATIO_30DAY": [1.0, 5.0, 3.0, 2.0],
        "CARD_NB_TX_1HOUR_WINDOW": [1.0, 6.0, 2.0, 1.0],
        "TX_HOUR": [3.0, 12.0, 23.0, 0.0],
    }
)


def fired(text: str) -> list[bool | None]:
    return FRAME.select(compile_condition(text).alias("x")).to_series().to_list()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TX_AMOUNT > 220", [False, True, False, None]),
        ("TX_AMOUNT >= 100 AND CARD_AMOUNT_RATIO_30DAY >= 3", [False, True, True, False]),
        ("TX_AMOUNT < 50 OR CARD_NB_TX_1HOUR_WINDOW > 5", [True, True, False, None]),
        ("NOT TX_AMOUNT > 220", [True, False, True, None]),
        ("TX_AMOUNT = 100", [False, False, True, None]),
        ("TX_AMOUNT <> 100", [True, True, False, None]),
        ("TX_AMOUNT != 100", [True, True, False, None]),
        ("TX_HOUR IN (0, 1, 2, 3)", [True, False, False, True]),
        ("TX_HOUR NOT IN (0, 1, 2, 3)", [False, True, True, False]),
        ("TX_HOUR BETWEEN 1 AND 12", [True, True, False, False]),
        ("TX_AMOUNT / CARD_AMOUNT_RATIO_30DAY > 40", [False, True, False, None]),
        ("TX_AMOUNT * 2 + 1 >= 201", [False, True, True, None]),
        ("TX_AMOUNT - 10 > 0", [False, True, True, None]),
        ("TX_HOUR % 2 = 1", [True, False, True, False]),
        (
            "CASE WHEN TX_HOUR < 6 THEN TX_AMOUNT > 5 ELSE TX_AMOUNT > 200 END",
            [True, True, False, None],
        ),
        ("ABS(TX_AMOUNT - 100) < 1", [False, False, True, None]),
        ("LEAST(TX_AMOUNT, 50) = 50", [False, True, True, True]),  # nulls ignored
        ("GREATEST(TX_AMOUNT, 200) > 200", [False, True, False, False]),
        ("COALESCE(TX_AMOUNT, 0) = 0", [False, False, False, True]),
        ("TX_AMOUNT IS NULL", [False, False, False, True]),
        ("LN(TX_AMOUNT) > 5", [False, True, False, None]),
        ("LOG10(TX_AMOUNT) >= 2", [False, True, True, None]),
        ("SQRT(TX_AMOUNT) > 10", [False, True, False, None]),
        ("ROUND(CARD_AMOUNT_RATIO_30DAY * 1.26, 1) = 3.8", [False, False, True, False]),
        ('"TX_AMOUNT" > 220', [False, True, False, None]),
        ("TX_HOUR < 6 and TX_AMOUNT > 5", [True, False, False, None]),
    ],
)
def test_language(text: str, expected: list[bool | None]) -> None:
    assert fired(text) == expected


def test_keywords_and_functions_are_case_insensitive() -> None:
    assert fired("abs(TX_AMOUNT) > 220 and TX_HOUR between 0 and 23") == [False, True, False, None]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("__import__('os').system('x')", "unknown function `__import__`"),
        ("__import__('os').system('x')", "dotted names are not allowed"),
        ("TX_AMOUNT.__class__", "dotted names are not allowed"),
        ("TX_AMOUNT.__class__.__bases__", "dotted names are not allowed"),
        ("(SELECT 1)", "forbidden SQL keyword `SELECT`"),
        ("TX_AMOUNT IN (SELECT TX_AMOUNT FROM t)", "forbidden SQL keyword `SELECT`"),
        ("read_csv('x') > 1", "unknown function `read_csv`"),
        ("1; DROP TABLE x", "`;` is not allowed"),
        ("TX_AMOUNT > 1; DROP TABLE x", "forbidden SQL keyword `DROP`"),
        ("lambda x: x", "character ':' is not allowed"),
        ("(lambda: 1)()", "unknown field `lambda`"),
        ("eval('1') > 0", "unknown function `eval`"),
        ("exec('import os')", "forbidden SQL keyword `exec`"),
        ("open('/etc/passwd')", "unknown function `open`"),
        ("SUM(TX_AMOUNT) > 1", "unknown function `SUM`"),
        ("TX_AMOUNT::int > 1", "character ':' is not allowed"),
        ("TX_AMOUNT > 1 -- hidden", "SQL comments are not allowed"),
        ("TX_AMOUNT > 1 /* hidden */", "SQL comments are not allowed"),
        ("TX_AMOUNT > `x`", "character '`' is not allowed"),
        ("TX_AMOUNT > 'unterminated", "unterminated quote"),
        ("TX_AMOUNT > '" + "a" * 201 + "'", "string literal longer than 200"),
        ("TX_AMOUNT > 1 OR " * 200 + "TX_AMOUNT > 1", f"(limit {MAX_EXPRESSION_CHARS})"),
        ("t.TX_AMOUNT > 1", "dotted names are not allowed"),
        ("TX_AMOUNT > 1 OVER (PARTITION BY x)", "forbidden SQL keyword `OVER`"),
        ("", "`when` is empty"),
    ],
)
def test_refused(text: str, needle: str) -> None:
    with pytest.raises(RuleError) as err:
        compile_condition(text)
    assert any(needle in problem for problem in err.value.problems), err.value.problems


def test_unknown_field_lists_known_names_and_suggests() -> None:
    with pytest.raises(RuleError) as err:
        compile_condition("tx_amount > 220")
    (problem,) = err.value.problems
    assert "unknown field `tx_amount` (did you mean `TX_AMOUNT`?)" in problem
    assert all(name in problem for name in RULE_FIELDS)


def test_quoted_unknown_field() -> None:
    with pytest.raises(RuleError, match="unknown field `CARD_ID`"):
        compile_condition('"CARD_ID" = 1')


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("TX_AMOUNT + 1", "Float64"),
        ("TX_AMOUNT", "Float64"),
        ("CASE WHEN TX_AMOUNT > 1 THEN 1 ELSE 0 END", "Int32"),
    ],
)
def test_type_mismatch(text: str, got: str) -> None:
    with pytest.raises(RuleError) as err:
        compile_condition(text)
    assert err.value.problems == [f"type mismatch: `when` must be a condition, got {got}"]


def test_string_compared_with_number_is_refused() -> None:
    with pytest.raises(RuleError, match="cannot evaluate `when`"):
        compile_condition("TX_AMOUNT > 'abc'")


def test_constant_condition_is_refused() -> None:
    with pytest.raises(RuleError, match="names no field"):
        compile_condition("TRUE")


def test_syntax_error_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="invalid expression"):
        compile_condition("TX_AMOUNT >")


def test_function_name_used_as_field() -> None:
    assert check_condition("ABS > 1") and "unknown field `ABS`" in check_condition("ABS > 1")[0]


def test_allow_list_functions_are_scalar() -> None:
    assert {"ABS", "LEAST", "GREATEST", "COALESCE", "LN", "SQRT", "ROUND"} <= FUNCTIONS
    assert not {"SUM", "AVG", "COUNT", "MIN", "MAX", "READ_CSV", "FIRST"} & FUNCTIONS
