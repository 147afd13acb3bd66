"""The declared transaction attributes (``RULES_DIR/schema.yaml``): what rules may name beyond
the computed features, and how stage 1 validates the extra fields of a transaction.

```yaml
fields:
  card_country: {type: string, required: true}
  merchant_country: {type: string}
  mcc: {type: category, values: ["5411", "5812", "5999"]}
  channel: {type: category, values: [pos, ecom], default: pos}
  amount_usd: {type: number}
  card_present: {type: boolean}
  tz: {type: string}
timezone: tz   # optional: a declared string field holding an IANA zone -> LOCAL_HOUR, LOCAL_WEEKDAY
```

Types: ``string``, ``category`` (a string, from ``values`` when given), ``number``, ``boolean``
and ``timestamp`` (ISO 8601 or epoch ms; a rule sees epoch ms). A transaction whose declared
field has the wrong type, or lacks a required one, is invalid (stage 1 sends it to the dead
letters with the reason); undeclared extras are carried untouched. ``card_id`` and
``terminal_id`` are always available as strings (e.g. for lists), without declaring them.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import numpy as np
import polars as pl
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from streams.errors import ValidationError
from streams.features.names import DAY_MS
from streams.rules.located import Located, bool_value
from streams.schema import Transaction, parse_timestamp

FieldType = Literal["string", "category", "number", "boolean", "timestamp"]
TYPES: tuple[FieldType, ...] = ("string", "category", "number", "boolean", "timestamp")
BUILTIN: dict[str, FieldType] = {"card_id": "string", "terminal_id": "string"}
LOCAL_FIELDS = ("LOCAL_HOUR", "LOCAL_WEEKDAY")
SCHEMA_FILE = "schema.yaml"
NAME_PATTERN = re.compile(r"[a-z](?:_?[a-z0-9]){0,63}")
_CORE = frozenset({"transaction_id", "card_id", "terminal_id", "amount", "timestamp"})
_DTYPES: dict[FieldType, pl.DataType] = {
    "string": pl.Utf8(),
    "category": pl.Utf8(),
    "number": pl.Float64(),
    "boolean": pl.Boolean(),
    "timestamp": pl.Int64(),
}
_SAMPLES: dict[FieldType, list[Any]] = {
    "string": ["a", "b"],
    "category": ["a", "b"],
    "number": [0.0, 1.0],
    "boolean": [False, True],
    "timestamp": [0, 1],
}


@dataclass(frozen=True)
class Attribute:
    name: str
    type: FieldType
    required: bool = False
    default: Any = None
    values: frozenset[str] = frozenset()  # a category's allowed values (any when empty)

    @property
    def dtype(self) -> pl.DataType:
        return _DTYPES[self.type]

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not of this attribute's type (None when it is, or is null)."""
        if value is None:
            return None
        kind = self.type
        if kind in ("string", "category"):
            if not isinstance(value, str):
                return f"`{self.name}` must be a string, got {type(value).__name__}"
            if self.values and value not in self.values:
                return f"`{self.name}` {value[:40]!r} is not one of its declared values"
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"`{self.name}` must be a number, got {type(value).__name__}"
            if not math.isfinite(value):
                return f"`{self.name}` must be finite"
        elif kind == "boolean":
            if not isinstance(value, bool):
                return f"`{self.name}` must be true or false, got {type(value).__name__}"
        else:
            try:
                parse_timestamp(value)
            except ValidationError as exc:
                return f"`{self.name}`: {exc}"
        return None

    def value(self, raw: Mapping[str, Any]) -> Any:
        """The rule-visible value of a transaction's field (the default when absent)."""
        value = raw.get(self.name, self.default)
        if self.type == "timestamp" and value is not None:
            try:
                return parse_timestamp(value)
            except ValidationError:
                return None
        return value


@dataclass(frozen=True)
class AttributeSchema:
    """The declared attributes of a rule directory (empty when it has no ``schema.yaml``)."""

    fields: Mapping[str, Attribute] = field(default_factory=dict)
    timezone: str | None = None  # the declared field holding each transaction's IANA zone
    file: str = ""

    def names(self) -> dict[str, pl.DataType]:
        """Every attribute a rule may name, with its polars type."""
        out = {name: _DTYPES[kind] for name, kind in BUILTIN.items()}
        out.update({name: attr.dtype for name, attr in self.fields.items()})
        if self.timezone is not None:
            out.update(dict.fromkeys(LOCAL_FIELDS, pl.Float64()))
        return out

    def samples(self) -> dict[str, pl.Series]:
        """Two typed values per attribute: what a condition is type-checked against."""
        out = {
            name: pl.Series(name, _SAMPLES[kind], dtype=_DTYPES[kind])
            for name, kind in BUILTIN.items()
        }
        for name, attr in self.fields.items():
            out[name] = pl.Series(name, _SAMPLES[attr.type], dtype=attr.dtype)
        if self.timezone is not None:
            for name in LOCAL_FIELDS:
                out[name] = pl.Series(name, [0.0, 1.0])
        return out

    def checked(self) -> AttributeSchema | None:
        """This schema when it checks anything (None: no declared field, nothing to check)."""
        return self if self.fields else None

    def validate(self, raw: Mapping[str, Any]) -> None:
        """``ValidationError`` naming the first declared field that is missing or mistyped."""
        for attr in self.fields.values():
            value = raw.get(attr.name)
            if value is None:
                if attr.required:
                    raise ValidationError(f"missing required field `{attr.name}`")
                continue
            problem = attr.problem(value)
            if problem is not None:
                raise ValidationError(problem)
        if self.timezone is not None:
            zone = raw.get(self.timezone)
            if zone is not None and zone not in _zones():
                raise ValidationError(f"`{self.timezone}` {str(zone)[:40]!r} is not a time zone")

    def columns(
        self, names: Sequence[str], txs: Sequence[Transaction], ts: np.ndarray
    ) -> list[pl.Series]:
        """The attribute columns ``names`` of a batch (nulls where a value is absent)."""
        return [self.column(name, self.values(name, txs, ts)) for name in names]

    def column(self, name: str, values: Sequence[Any]) -> pl.Series:
        dtype = _DTYPES[BUILTIN[name]] if name in BUILTIN else pl.Float64()
        if name in self.fields:
            dtype = self.fields[name].dtype
        return pl.Series(name, values, dtype=dtype, strict=False)

    def values(self, name: str, txs: Sequence[Transaction], ts: np.ndarray) -> Sequence[Any]:
        """One attribute's value per transaction of a batch (None where absent)."""
        if name in BUILTIN:
            return [getattr(tx, name) for tx in txs]
        if name in LOCAL_FIELDS:
            return self._local(name, txs, ts).tolist()
        attr = self.fields[name]
        if attr.type == "timestamp":
            return [attr.value(tx.raw) for tx in txs]
        default = attr.default  # the common case: one dict lookup per row
        return [tx.raw.get(name, default) for tx in txs]

    def _local(self, name: str, txs: Sequence[Transaction], ts: np.ndarray) -> np.ndarray:
        """Hour (0-23) or weekday (Monday 0) of each transaction in its own time zone (NaN
        when it has none); UTC offsets are looked up once per zone and hour."""
        assert self.timezone is not None
        offsets = np.array(
            [
                _offset_ms(tx.raw.get(self.timezone), int(t) // 3_600_000)
                for tx, t in zip(txs, ts.tolist(), strict=True)
            ],
            dtype=np.float64,
        )
        local = ts + offsets
        if name == "LOCAL_HOUR":
            return (local % DAY_MS) // 3_600_000
        return (local // DAY_MS + 3) % 7


EMPTY_SCHEMA = AttributeSchema()


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


_OFFSETS: dict[tuple[str, int], float] = {}


def _offset_ms(zone: Any, hour: int) -> float:
    """UTC offset (ms) of ``zone`` at the start of the UTC hour ``hour`` (NaN for no zone)."""
    if not isinstance(zone, str) or zone not in _zones():
        return math.nan
    key = (zone, hour)
    offset = _OFFSETS.get(key)
    if offset is None:
        from datetime import UTC, datetime

        when = datetime.fromtimestamp(hour * 3600, tz=UTC).astimezone(zoneinfo.ZoneInfo(zone))
        delta = when.utcoffset()
        offset = delta.total_seconds() * 1000 if delta is not None else 0.0
        if len(_OFFSETS) > 100_000:
            _OFFSETS.clear()
        _OFFSETS[key] = offset
    return offset


def _attribute(label: str, name: Any, node: Any, line: int) -> tuple[Attribute | None, list[str]]:
    where = f"{label}:{line}: field `{name}`"
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return None, [
            f"{where}: a field name is lower_snake_case (a letter, then a-z, 0-9, single `_`)"
        ]
    if name in _CORE:
        return None, [f"{where}: `{name}` is a core transaction field, not an attribute"]
    if not isinstance(node, CommentedMap):
        return None, [f"{where}: must be a mapping like {{type: string}}"]
    spec = Located(label, node, line, f"field `{name}`")
    spec.check_keys(("type",), ("required", "default", "values"))
    kind = node.get("type")
    if "type" in node and kind not in TYPES:
        spec.at("type", f"bad type {kind!r}: must be one of {', '.join(TYPES)}")
    required = bool_value(spec, "required", False)
    values: frozenset[str] = frozenset()
    if "values" in node:
        seq = node.get("values")
        if kind != "category":
            spec.at("values", "`values` only applies to `type: category`")
        elif not isinstance(seq, list) or not seq or not all(isinstance(v, str) for v in seq):
            spec.at(
                "values", '`values` must be a non-empty list of strings (quote codes like "5411")'
            )
        else:
            values = frozenset(seq)
    if spec.problems:
        return None, spec.problems
    attr = Attribute(name, kind, required, None, values)
    if "default" in node:
        default = node.get("default")
        problem = attr.problem(default)
        if problem is not None:
            spec.at("default", f"default: {problem}")
            return None, spec.problems
        attr = Attribute(name, kind, required, default, values)
    return attr, []


def parse_schema(label: str, text: str) -> tuple[AttributeSchema, list[str]]:
    """A ``schema.yaml`` text to its schema, or every problem as ``file:line: message``."""
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        return EMPTY_SCHEMA, [
            f"{label}:{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}"
        ]
    if doc is None:
        return AttributeSchema(file=label), []
    if not isinstance(doc, CommentedMap):
        return EMPTY_SCHEMA, [
            f"{label}:1: the top level must be a mapping with a `fields:` mapping"
        ]
    top = Located(label, doc, 1, "schema")
    top.check_keys(("fields",), ("timezone",))
    declared = doc.get("fields")
    attrs: dict[str, Attribute] = {}
    if "fields" in doc and not isinstance(declared, CommentedMap):
        top.at("fields", "`fields` must be a mapping of field name to {type: ...}")
    elif isinstance(declared, CommentedMap):
        for name, node in declared.items():
            attr, problems = _attribute(label, name, node, declared.lc.key(name)[0] + 1)
            top.problems.extend(problems)
            if attr is not None:
                attrs[attr.name] = attr
    zone = doc.get("timezone")
    if "timezone" in doc and (
        not isinstance(zone, str)
        or zone not in attrs
        or attrs[zone].type not in ("string", "category")
    ):
        top.at("timezone", "`timezone` must name a declared string field (it holds IANA zones)")
        zone = None
    return AttributeSchema(attrs, zone, label), top.problems
