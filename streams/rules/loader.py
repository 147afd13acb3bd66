"""A directory of rule files to a validated ``RuleSet``, or every problem in it.

Rule files are the directory's ``*.yaml`` and ``*.yml`` files (hidden files skipped), read in
name order, except ``schema.yaml``: the declared transaction attributes
(``streams.rules.attributes``), read first because rules are checked against it. Value lists
are the files of ``lists/`` (``streams.rules.lists``). Each file is read once; the same bytes
are parsed and hashed into the version (schema and lists included), so a set and its version
always describe the same contents, and every decision names the lists it was judged with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from streams.errors import RuleError, ValidationError
from streams.rules.attributes import EMPTY_SCHEMA, SCHEMA_FILE, AttributeSchema, parse_schema
from streams.rules.examples import example_problems
from streams.rules.expr import Catalog
from streams.rules.lists import ValueList, list_files, parse_list
from streams.rules.model import Rule, RuleSet
from streams.rules.parse import parse_file

RULE_SUFFIXES = (".yaml", ".yml")
SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules"  # the project's rules/ folder
VERSION_CHARS = 12


def rule_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in RULE_SUFFIXES
        and not path.name.startswith(".")
        and path.name != SCHEMA_FILE
        and path.is_file()
    )


class _Reader:
    """Reads each file once, hashing its name and bytes into the version."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.problems: list[str] = []

    def text(self, path: Path, name: str) -> str | None:
        try:
            data = path.read_bytes()
        except OSError as exc:  # e.g. replaced or removed while we read
            self.problems.append(f"{path}:1: cannot read: {exc.strerror or exc}")
            return None
        key = name.encode()
        self.digest.update(len(key).to_bytes(4, "big") + key + len(data).to_bytes(8, "big") + data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problems.append(f"{path}:1: not UTF-8 text ({exc.reason} at byte {exc.start})")
            return None


def _schema(directory: Path, reader: _Reader) -> AttributeSchema:
    path = directory / SCHEMA_FILE
    if not path.is_file():
        return EMPTY_SCHEMA
    text = reader.text(path, SCHEMA_FILE)
    if text is None:
        return EMPTY_SCHEMA
    schema, problems = parse_schema(str(path), text)
    reader.problems.extend(problems)
    return schema


def _lists(directory: Path, reader: _Reader) -> dict[str, ValueList]:
    lists: dict[str, ValueList] = {}
    for path in list_files(directory):
        text = reader.text(path, f"lists/{path.name}")
        if text is None:
            continue
        if path.stem in lists:
            reader.problems.append(f"{path}:1: list `{path.stem}` is defined twice")
            continue
        try:
            lists[path.stem] = parse_list(path.stem, str(path), text)
        except ValidationError as exc:
            reader.problems.append(str(exc))
    return lists


def _load(directory: Path, check_examples: bool) -> tuple[RuleSet | None, list[str]]:
    if not directory.is_dir():
        return None, [
            f"{directory}: not a directory ({directory.absolute()}; relative paths are read from "
            "the working directory: run from the project's, or set FRAUD_RULES_DIR)"
        ]
    rules: list[Rule] = []
    reader = _Reader()
    problems = reader.problems
    try:
        files = rule_files(directory)
    except OSError as exc:
        return None, [f"{directory}: cannot list: {exc.strerror or exc}"]
    schema = _schema(directory, reader)
    lists = _lists(directory, reader)
    catalog = Catalog(schema, frozenset(lists))
    for path in files:
        text = reader.text(path, path.name)
        if text is None:
            continue
        file_rules, file_problems = parse_file(str(path), text, catalog)
        rules.extend(file_rules)
        problems.extend(file_problems)
    first: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in first:
            problems.append(
                f"{rule.location}: duplicate rule id `{rule.id}` "
                f"(first defined at {first[rule.id].location})"
            )
        else:
            first[rule.id] = rule
    if not files:
        problems.append(f"{directory}: no rule files ({', '.join('*' + s for s in RULE_SUFFIXES)})")
    elif not rules and not problems:
        problems.append(f"{directory}: no rules in {len(files)} rule file(s)")
    if check_examples:
        problems.extend(example_problems(first.values(), lists))
    if problems:
        return None, problems
    names = tuple(path.name for path in files)
    version = reader.digest.hexdigest()[:VERSION_CHARS]
    return RuleSet(tuple(rules), version, directory, names, schema, lists), []


def validate_dir(directory: Path | str, *, check_examples: bool = False) -> list[str]:
    """Every problem of a rule directory as ``file:line: message`` (empty when valid)."""
    return _load(Path(directory), check_examples)[1]


def load_rules(directory: Path | str, *, check_examples: bool = False) -> RuleSet:
    """The directory's rule set; ``RuleError`` holds every problem when it is not valid.

    With ``check_examples`` a rule whose written examples fail makes the set invalid too.
    """
    ruleset, problems = _load(Path(directory), check_examples)
    if ruleset is None:
        raise RuleError(problems)
    return ruleset
