"""Value lists (``RULES_DIR/lists/NAME.csv`` or ``NAME.yaml``) that rules name with
``FIELD IN LIST NAME``: blocked cards, trusted merchants, risky countries.

A CSV list has one value per line, optionally an expiry after a comma; a header line
``value`` or ``value,expires`` is allowed::

    value,expires
    4111111111111111,2027-01-31T00:00:00Z
    5500000000000004

A YAML list is ``values: [v1, {value: v2, expires: 2027-01-31}]``. An entry with an expiry
matches only transactions whose event time is before it, so a replay gives the same decisions
as the live run. ``fraudstream lists add/remove`` rewrite a CSV list atomically (a temporary
file renamed over it): a worker's hot reload never reads half a file.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from streams.errors import ValidationError
from streams.schema import iso_utc, parse_timestamp

LISTS_DIR = "lists"
LIST_SUFFIXES = (".csv", ".yaml", ".yml")
LIST_NAME = re.compile(r"[A-Za-z](?:_?[A-Za-z0-9]){0,63}")  # no `__`: see streams.rules.expr
MAX_VALUE_CHARS = 256


@dataclass(frozen=True)
class ValueList:
    name: str
    file: str
    always: frozenset[str] = frozenset()
    expiring: Mapping[str, int] = field(default_factory=dict)  # value -> expiry (epoch ms)

    def __len__(self) -> int:
        return len(self.always) + len(self.expiring)

    def hits(self, values: Sequence[Any], ts: np.ndarray) -> list[bool]:
        """Per row: the value is on the list at the row's event time (None never is). Python
        set and dict lookups: cheaper per batch than hashing the whole list in polars."""
        always, expiring = self.always, self.expiring
        if not expiring:
            return [v in always for v in values]
        return [
            v in always or (v in expiring and expiring[v] > t)
            for v, t in zip(values, ts.tolist(), strict=True)
        ]

    def contains(self, values: pl.Series, ts: np.ndarray) -> pl.Series:
        """``hits`` of a column of values, as a boolean column."""
        text = values.cast(pl.Utf8).to_list()
        return pl.Series(values.name, self.hits(text, ts), dtype=pl.Boolean)


def _entry(value: Any, expires: Any, where: str) -> tuple[str, int | None]:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationError(f"{where}: a value must be a string or a number, got {value!r}")
    text = str(value).strip()
    if not text or len(text) > MAX_VALUE_CHARS:
        raise ValidationError(f"{where}: a value has 1 to {MAX_VALUE_CHARS} characters")
    if expires is None or expires == "":
        return text, None
    if isinstance(expires, date):  # YAML reads an unquoted date as one (UTC when no zone)
        expires = expires.isoformat()
    try:
        return text, parse_timestamp(expires)
    except ValidationError as exc:
        raise ValidationError(f"{where}: bad expiry: {exc}") from None


def _csv_entries(label: str, text: str) -> list[tuple[str, int | None]]:
    out = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() == "value":
            continue  # header
        if len(cells) > 2:
            raise ValidationError(f"{label}:{number}: expected `value` or `value,expires`")
        out.append(_entry(cells[0], cells[1] if len(cells) > 1 else None, f"{label}:{number}"))
    return out


def _yaml_entries(label: str, text: str) -> list[tuple[str, int | None]]:
    try:
        doc = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ValidationError(f"{label}:{line}: invalid YAML") from None
    if doc is None:
        return []
    seq = doc.get("values") if isinstance(doc, dict) else None
    if not isinstance(seq, list):
        raise ValidationError(f"{label}:1: a YAML list is a mapping with a `values:` list")
    out = []
    for i, item in enumerate(seq):
        where = f"{label}:{seq.lc.item(i)[0] + 1}"  # type: ignore[attr-defined]
        if isinstance(item, dict):
            unknown = set(item) - {"value", "expires"}
            if unknown:
                raise ValidationError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
            out.append(_entry(item.get("value"), item.get("expires"), where))
        else:
            out.append(_entry(item, None, where))
    return out


def parse_list(name: str, label: str, text: str) -> ValueList:
    """One list file's text to its list (``ValidationError`` with ``file:line``)."""
    parse = _csv_entries if label.endswith(".csv") else _yaml_entries
    always: set[str] = set()
    expiring: dict[str, int] = {}
    for value, expires in parse(label, text):
        if expires is None:
            always.add(value)
            expiring.pop(value, None)
        elif value not in always:
            expiring[value] = max(expires, expiring.get(value, expires))
    return ValueList(name, label, frozenset(always), expiring)


def list_files(rules_dir: Path) -> list[Path]:
    directory = rules_dir / LISTS_DIR
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in LIST_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def list_path(rules_dir: Path, name: str) -> Path:
    """The file of list ``name`` (an existing one, else a new CSV)."""
    if not LIST_NAME.fullmatch(name):
        raise ValidationError(
            f"bad list name {name!r}: a letter, then letters, digits or single `_`"
        )
    for path in list_files(rules_dir):
        if path.stem == name:
            return path
    return rules_dir / LISTS_DIR / f"{name}.csv"


def write_list(path: Path, entries: Mapping[str, int | None]) -> None:
    """Write a CSV list atomically: a temporary file in the same directory, then a rename."""
    if path.suffix != ".csv":
        raise ValidationError(f"{path}: only CSV lists are edited by the command line")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["value", "expires"])
    for value in sorted(entries):
        expires = entries[value]
        writer.writerow([value, "" if expires is None else iso_utc(expires)])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def entries_of(path: Path) -> dict[str, int | None]:
    """Every entry of an existing list file (empty for a new one)."""
    if not path.exists():
        return {}
    value_list = parse_list(path.stem, str(path), path.read_text(encoding="utf-8"))
    out: dict[str, int | None] = dict.fromkeys(value_list.always)
    out.update(value_list.expiring)
    return out


def edit_list(
    rules_dir: Path,
    name: str,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    expires: str | None = None,
) -> tuple[Path, int]:
    """Add (with an optional expiry) or remove values; the file and its new size."""
    path = list_path(rules_dir, name)
    entries = entries_of(path)
    expiry = parse_timestamp(expires) if expires else None
    for value in add:
        text, _ = _entry(value, None, name)
        entries[text] = expiry
    for value in remove:
        entries.pop(str(value).strip(), None)
    write_list(path, entries)
    return path, len(entries)
