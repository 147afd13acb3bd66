"""A directory of rule files to a validated ``RuleSet``, or every problem in it.

Rule files are the directory's ``*.yaml`` and ``*.yml`` files (hidden files skipped), read in
name order. Each file is read once; the same bytes are parsed and hashed into the version, so a
set and its version always describe the same contents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from streams.errors import RuleError
from streams.rules.examples import example_problems
from streams.rules.model import Rule, RuleSet
from streams.rules.parse import parse_file

RULE_SUFFIXES = (".yaml", ".yml")
VERSION_CHARS = 12


def rule_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in RULE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _load(directory: Path, check_examples: bool) -> tuple[RuleSet | None, list[str]]:
    if not directory.is_dir():
        return None, [f"{directory}: not a directory"]
    problems: list[str] = []
    rules: list[Rule] = []
    digest = hashlib.sha256()
    try:
        files = rule_files(directory)
    except OSError as exc:
        return None, [f"{directory}: cannot list: {exc.strerror or exc}"]
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:  # e.g. replaced or removed while we read
            problems.append(f"{path}:1: cannot read: {exc.strerror or exc}")
            continue
        name = path.name.encode()
        digest.update(len(name).to_bytes(4, "big") + name + len(data).to_bytes(8, "big") + data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}:1: not UTF-8 text ({exc.reason} at byte {exc.start})")
            continue
        file_rules, file_problems = parse_file(str(path), text)
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
        problems.extend(example_problems(first.values()))
    if problems:
        return None, problems
    names = tuple(path.name for path in files)
    return RuleSet(tuple(rules), digest.hexdigest()[:VERSION_CHARS], directory, names), []


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
