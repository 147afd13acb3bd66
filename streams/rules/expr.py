"""Rule conditions: a small, checked subset of SQL expressions, compiled to polars.

A condition is checked token by token before polars ever sees it: only field names, numbers,
short strings, operators and an allow-list of keywords and functions get through. Nothing is
ever handed to Python ``eval``/``exec``. The compiled expression must then name known fields
only and evaluate to a boolean on a typed sample frame.

Known fields are the computed ones (``RULE_FIELDS``) and the attributes of a ``Catalog`` (the
rule directory's declared schema, ``streams.rules.attributes``). ``FIELD IN LIST NAME`` (and
``NOT IN LIST``) is rewritten, before polars parses the text, to a boolean column named
``__in_list__NAME__FIELD`` that the rule set fills from the list at evaluation time.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from streams.errors import RuleError
from streams.features.names import RULE_FIELDS
from streams.rules.attributes import EMPTY_SCHEMA, AttributeSchema

MAX_EXPRESSION_CHARS = 2000
MAX_STRING_CHARS = 200

KEYWORDS = frozenset(
    {"AND", "OR", "NOT", "IN", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "IS", "NULL"}
    | {"TRUE", "FALSE", "LIKE", "ILIKE", "LIST"}
)
# Scalar, row-wise functions only: no aggregates, windows, I/O or casts.
FUNCTIONS = frozenset(
    {"ABS", "SIGN", "LEAST", "GREATEST", "COALESCE", "IFNULL", "NULLIF", "IF"}
    | {"LN", "LOG", "LOG2", "LOG10", "LOG1P", "EXP", "SQRT", "CBRT", "POWER", "POW", "MOD"}
    | {"ROUND", "FLOOR", "CEIL", "CEILING"}
    | {"STARTS_WITH", "ENDS_WITH", "STRPOS", "LOWER", "UPPER", "LENGTH", "TRIM"}
)
FORBIDDEN_KEYWORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "WITH", "UNION", "JOIN", "INTO", "VALUES", "TABLE", "EXISTS"}
    | {"INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "EXEC", "EXECUTE", "OVER"}
)
_FIELDS = frozenset(RULE_FIELDS)
LIST_PREFIX = "__in_list__"


@dataclass(frozen=True)
class Catalog:
    """What a condition may name: the computed fields, the declared attributes and the lists."""

    schema: AttributeSchema = EMPTY_SCHEMA
    lists: frozenset[str] = frozenset()
    attributes: Mapping[str, pl.DataType] = field(init=False, repr=False, compare=False)
    sample: pl.DataFrame = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", self.schema.names())
        numbers = {name: pl.Series(name, [0.0, 1.0]) for name in RULE_FIELDS}
        object.__setattr__(self, "sample", pl.DataFrame({**numbers, **self.schema.samples()}))

    def known(self, name: str) -> bool:
        return name in _FIELDS or name in self.attributes

    def names(self) -> list[str]:
        return [*RULE_FIELDS, *self.attributes]


DEFAULT_CATALOG = Catalog()


def list_column(list_name: str, field_name: str) -> str:
    return f"{LIST_PREFIX}{list_name}__{field_name}"


def list_reference(column: str) -> tuple[str, str] | None:
    """(list, field) of a list-membership column name (None for any other name); list names
    hold no ``__``, so the first one ends the list's name."""
    if not column.startswith(LIST_PREFIX):
        return None
    list_name, _, field_name = column[len(LIST_PREFIX) :].partition("__")
    return list_name, field_name


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


def _unknown_field(name: str, catalog: Catalog = DEFAULT_CATALOG) -> str:
    names = catalog.names()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75) or difflib.get_close_matches(
        name.upper(), RULE_FIELDS, n=1, cutoff=0.75
    )
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    declared = "" if catalog.schema.fields else " (declare attributes in schema.yaml)"
    return f"unknown field `{name}`{hint}; known fields: {', '.join(names)}{declared}"


def _bad_char(text: str, pos: int) -> str:
    char = text[pos]
    if char == ".":
        return f"attribute access / dotted names are not allowed (`.` at column {pos + 1})"
    if char == ";":
        return f"`;` is not allowed: a condition is one expression (column {pos + 1})"
    if char in "'\"":
        return f"unterminated quote at column {pos + 1}"
    return f"character {char!r} is not allowed (column {pos + 1})"


def _tokens(text: str) -> tuple[list[tuple[str, str, int, int]], list[str]]:
    """(kind, text, start, end) of every token but whitespace, and the characters refused."""
    tokens: list[tuple[str, str, int, int]] = []
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
            return tokens, ["SQL comments are not allowed in `when` (use a YAML `#` comment)"]
        if kind != "ws":
            tokens.append((kind, match.group(), match.start(), match.end()))
        pos = match.end()
    return tokens, problems


def _rewrite_lists(
    text: str, tokens: list[tuple[str, str, int, int]], catalog: Catalog
) -> tuple[str, list[str]]:
    """``F [NOT] IN LIST L`` as ``[NOT] __in_list__L__F``; problems of unknown lists or fields."""
    problems: list[str] = []
    pieces: list[str] = []
    last = 0
    words = [value.upper() if kind == "name" else value for kind, value, _, _ in tokens]
    for i, (kind, value, _, _) in enumerate(tokens):
        if kind != "name" or value.upper() != "LIST":
            continue
        negated = i >= 3 and words[i - 2] == "NOT"
        first = i - (3 if negated else 2)
        if i < 2 or words[i - 1] != "IN" or first < 0 or tokens[first][0] != "name":
            problems.append("`LIST` must follow `FIELD IN` (as in `card_id IN LIST blocked_cards`)")
            continue
        if i + 1 >= len(tokens) or tokens[i + 1][0] != "name":
            problems.append("`IN LIST` must be followed by a list's name")
            continue
        field_name, list_name = tokens[first][1], tokens[i + 1][1]
        if list_name not in catalog.lists:
            known = ", ".join(sorted(catalog.lists)) or "none"
            problems.append(f"unknown list `{list_name}` (lists/{list_name}.csv); lists: {known}")
        kind_of = catalog.attributes.get(field_name)
        if kind_of is None or kind_of != pl.Utf8:
            problems.append(
                f"`{field_name} IN LIST`: lists hold strings; name a string attribute "
                f"(card_id, terminal_id or one declared in schema.yaml)"
            )
        pieces.append(text[last : tokens[first][2]])
        pieces.append(("NOT " if negated else "") + list_column(list_name, field_name))
        last = tokens[i + 1][3]
    pieces.append(text[last:])
    return "".join(pieces), problems


def check_condition(text: str, catalog: Catalog = DEFAULT_CATALOG) -> list[str]:
    """Every safety problem of a condition's text (empty list when it may be compiled)."""
    return _checked(text, catalog)[1]


def _checked(text: str, catalog: Catalog) -> tuple[str, list[str]]:
    """The text with its list references rewritten, and every problem of it."""
    if not text.strip():
        return text, ["`when` is empty"]
    if len(text) > MAX_EXPRESSION_CHARS:
        return text, [f"`when` is {len(text)} characters long (limit {MAX_EXPRESSION_CHARS})"]
    tokens, problems = _tokens(text)
    if problems and problems[0].startswith("SQL comments"):
        return text, problems
    rewritten, problems_of_lists = _rewrite_lists(text, tokens, catalog)
    problems.extend(problems_of_lists)
    for i, (kind, value, _, _) in enumerate(tokens):
        is_call = i + 1 < len(tokens) and tokens[i + 1][1] == "("
        if kind == "string" and len(value) - 2 > MAX_STRING_CHARS:
            problems.append(f"string literal longer than {MAX_STRING_CHARS} characters")
        elif kind == "quoted" and not catalog.known(value[1:-1]):
            problems.append(_unknown_field(value[1:-1], catalog))
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
            elif (
                not is_call
                and not catalog.known(value)
                and not (i >= 2 and tokens[i - 1][1].upper() == "LIST")
            ):
                problems.append(_unknown_field(value, catalog))
    return rewritten, list(dict.fromkeys(problems))


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def compile_condition(text: str, catalog: Catalog = DEFAULT_CATALOG) -> pl.Expr:
    """A checked condition as a boolean polars expression; ``RuleError`` lists the problems."""
    rewritten, problems = _checked(text, catalog)
    if problems:
        raise RuleError(problems)
    try:
        expr = pl.sql_expr(rewritten)
        names = set(expr.meta.root_names())
    except Exception as exc:  # polars raises several SQL error types
        raise RuleError([f"invalid expression: {_first_line(exc)}"]) from None
    lists = {name for name in names if list_reference(name) is not None}
    unknown = sorted(name for name in names - lists if not catalog.known(name))
    if unknown:
        raise RuleError([_unknown_field(name, catalog) for name in unknown])
    if not names:
        raise RuleError(["`when` names no field: a constant condition is not a rule"])
    sample = catalog.sample.with_columns(pl.Series(name, [False, True]) for name in sorted(lists))
    try:
        result = sample.select(expr.alias("when")).to_series()
    except Exception as exc:
        raise RuleError([f"cannot evaluate `when`: {_first_line(exc)}"]) from None
    if result.len() != sample.height:
        raise RuleError(["`when` must be judged per transaction (aggregates are not allowed)"])
    if result.dtype != pl.Boolean:
        raise RuleError([f"type mismatch: `when` must be a condition, got {result.dtype}"])
    return expr
