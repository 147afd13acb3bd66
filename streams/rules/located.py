"""Checks on values of a round-trip YAML mapping, each problem located on its key's line."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from ruamel.yaml.comments import CommentedMap


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unknown_key(key: object, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"unknown key `{key}`{hint}; allowed keys: {', '.join(allowed)}"


class Located:
    """A YAML mapping with its file, and ``at(...)`` to format a problem on a key's line."""

    def __init__(self, label: str, node: CommentedMap, line: int, name: str):
        self.label, self.node, self.line, self.name = label, node, line, name
        self.problems: list[str] = []

    def at(self, key: object, message: str, *, on_value: bool = True) -> None:
        line = self.line
        if key in self.node:
            pos = self.node.lc.value(key) if on_value else self.node.lc.key(key)
            line = pos[0] + 1
        self.problems.append(f"{self.label}:{line}: {self.name}: {message}")

    def check_keys(self, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
        allowed = required + optional
        for key in self.node:
            if key not in allowed:
                self.at(key, _unknown_key(key, allowed), on_value=False)
        for key in required:
            if key not in self.node:
                self.at(key, f"missing key `{key}`")


def text_value(
    rule: Located, key: str, pattern: re.Pattern[str] | None = None, what: str = ""
) -> str:
    """The non-empty string under ``key`` ("" and a problem if it is not one)."""
    value = rule.node.get(key)
    if key not in rule.node:
        return ""
    if not isinstance(value, str) or not value.strip():
        rule.at(key, f"`{key}` must be a non-empty string, got {value!r}")
        return ""
    if pattern is not None and not pattern.fullmatch(value):
        rule.at(key, f"`{key}` {value!r} must be {what}")
    return str(value)


def bool_value(rule: Located, key: str, default: bool) -> bool:
    """The boolean under ``key``, or ``default`` when absent (and a problem if not a bool)."""
    value = rule.node.get(key, default)
    if not isinstance(value, bool):
        rule.at(key, f"`{key}` must be true or false, got {value!r}")
        return default
    return value
