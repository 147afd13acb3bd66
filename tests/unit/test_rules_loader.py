"""Loading and validating rule directories: every problem as an exact ``file:line: message``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streams.errors import RuleError
from streams.rules import load_rules, validate_dir

RULE = """\
  - id: {id}
    description: a rule
    when: {when}
    action: {action}
    score: {score}
    reason: {reason}
"""


def rule(
    id: str = "big",
    when: str = "TX_AMOUNT > 220",
    action: str = "flag",
    score: str = "0.9",
    reason: str = "LARGE_AMOUNT",
    extra: str = "",
) -> str:
    text = RULE.format(id=id, when=when, action=action, score=score, reason=reason)
    return text + textwrap.indent(textwrap.dedent(extra), "    ") if extra else text


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def only_problem(directory: Path) -> str:
    problems = validate_dir(directory)
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_file_loads(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "# amounts\nrules:\n" + rule() + rule(id="tag1", action="tag"))
    ruleset = load_rules(tmp_path)
    assert ruleset.ids == ("big", "tag1")
    big = ruleset.get("big")
    assert (big.action, big.score, big.reason, big.enabled, big.shadow) == (
        "flag",
        0.9,
        "LARGE_AMOUNT",
        True,
        False,
    )
    assert big.location == f"{tmp_path / 'a.yaml'}:3"
    assert ruleset.source == tmp_path and ruleset.files == ("a.yaml",)
    assert len(ruleset.version) == 12 and int(ruleset.version, 16) >= 0


def test_bad_yaml_names_its_line(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(when="[TX_AMOUNT > 1"))
    assert only_problem(tmp_path) == (
        f"{f}:5: invalid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 4)"
    )


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(extra="score: 0.5\n"))
    assert only_problem(tmp_path).startswith(f'{f}:8: invalid YAML: found duplicate key "score"')


def test_missing_key_points_at_the_rule(tmp_path: Path) -> None:
    text = "rules:\n" + rule().replace("    reason: LARGE_AMOUNT\n", "")
    f = write(tmp_path, "a.yaml", text)
    assert only_problem(tmp_path) == f"{f}:2: rule `big`: missing key `reason`"


def test_extra_key_points_at_the_key_and_suggests(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(extra="enable: false\n"))
    problem = only_problem(tmp_path)
    assert problem.startswith(f"{f}:8: rule `big`: unknown key `enable` (did you mean `enabled`?)")
    assert "allowed keys: id, description, when, action, score, reason, enabled" in problem


@pytest.mark.parametrize(
    ("kwargs", "line", "message"),
    [
        ({"score": "high"}, 6, "`score` must be a number from 0 to 1, got 'high'"),
        ({"score": "1.5"}, 6, "`score` must be a number from 0 to 1, got 1.5"),
        ({"score": "true"}, 6, "`score` must be a number from 0 to 1, got True"),
        ({"action": "decline"}, 5, "bad action 'decline': must be one of flag, tag, review"),
        ({"reason": "large amount"}, 7, "`reason` 'large amount' must be an UPPER_SNAKE_CASE"),
        ({"extra": "enabled: yes\n"}, 8, "`enabled` must be true or false, got 'yes'"),
        ({"extra": "shadow: 1\n"}, 8, "`shadow` must be true or false, got 1"),
        ({"when": "TX_AMOUNT + 1"}, 4, "type mismatch: `when` must be a condition, got Float64"),
        ({"when": "'(SELECT 1) > 0'"}, 4, "forbidden SQL keyword `SELECT`"),
        ({"when": "\"__import__('os').system('ls')\""}, 4, "unknown function `__import__`"),
        ({"when": "TX_AMOUNT.real > 1"}, 4, "attribute access / dotted names are not allowed"),
        ({"when": "12"}, 4, "`when` must be a non-empty string, got 12"),
        ({"when": "AMOUNT > 1"}, 4, "unknown field `AMOUNT`"),
    ],
)
def test_field_problems_point_at_their_line(
    tmp_path: Path, kwargs: dict[str, str], line: int, message: str
) -> None:
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(**kwargs))
    problems = validate_dir(tmp_path)
    assert any(p.startswith(f"{f}:{line}: rule `big`: {message}") for p in problems), problems


def test_id_problems(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(id="'big rule'") + rule(id="7"))
    assert validate_dir(tmp_path) == [
        f"{f}:2: rule `big rule`: `id` 'big rule' must be a letter then letters, digits, "
        "`_` or `-`",
        f"{f}:8: rule #2: `id` must be a non-empty string, got 7",
    ]


def test_unknown_field_lists_known_names(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(when="AMOUNT > 1 AND TX_HOUR < 6"))
    problem = only_problem(tmp_path)
    assert problem.startswith(f"{f}:4: rule `big`: unknown field `AMOUNT`")
    assert "known fields: TX_AMOUNT, TX_DURING_WEEKEND" in problem and "TX_WEEKDAY" in problem


def test_multiline_when_is_located_and_works(tmp_path: Path) -> None:
    text = "rules:\n" + rule(when=">\n      TX_AMOUNT > 220\n      AND TX_HOUR < 6")
    write(tmp_path, "a.yaml", text)
    assert load_rules(tmp_path).get("big").when.strip() == "TX_AMOUNT > 220 AND TX_HOUR < 6"
    f = write(tmp_path, "a.yaml", text.replace("TX_HOUR", "HOUR"))
    assert only_problem(tmp_path).startswith(f"{f}:4: rule `big`: unknown field `HOUR`")


def test_duplicate_ids_name_both_places(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "rules:\n" + rule(id="dup"))
    b = write(tmp_path, "b.yaml", "# second\nrules:\n" + rule(id="other") + rule(id="dup"))
    assert only_problem(tmp_path) == f"{b}:9: duplicate rule id `dup` (first defined at {a}:2)"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "rules:\n" + rule(action="decline", score="2"))
    b = write(tmp_path, "b.yaml", "rules:\n" + rule(id="x", when="FOO > 1"))
    problems = validate_dir(tmp_path)
    assert [p.split(": rule")[0] for p in problems] == [f"{a}:5", f"{a}:6", f"{b}:4"]
    with pytest.raises(RuleError) as err:
        load_rules(tmp_path)
    assert err.value.problems == problems


def test_example_problems(tmp_path: Path) -> None:
    extra = """\
    examples:
      - fields: {TX_AMOUNT: 300, COLOUR: 1}
        expect: fire
      - fields: {TX_AMOUNT: abc}
        expect: maybe
      - fields: {TX_AMOUNT: 1}
        expect: fire
        note: x
    """
    f = write(tmp_path, "a.yaml", "rules:\n" + rule(extra=extra))
    problems = validate_dir(tmp_path)
    assert problems[0].startswith(f"{f}:9: rule `big` example 1: unknown field `COLOUR`")
    assert problems[1:] == [
        f"{f}:11: rule `big` example 2: `TX_AMOUNT` must be a number",
        f"{f}:12: rule `big` example 2: `expect` must be `fire` or `no_fire`, got 'maybe'",
        f"{f}:15: rule `big` example 3: unknown key `note`; allowed keys: fields, expect",
    ]


def test_top_level_problems(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "# nothing yet\n")
    assert validate_dir(tmp_path) == [f"{f}:1: the file is empty: expected a `rules:` list"]
    write(tmp_path, "a.yaml", "- id: x\n")
    assert validate_dir(tmp_path) == [
        f"{f}:1: the top level must be a mapping with a `rules:` list"
    ]
    write(tmp_path, "a.yaml", "rules:\n" + rule() + "version: 2\n")
    assert validate_dir(tmp_path) == [
        f"{f}:8: top level: unknown key `version`; allowed keys: rules"
    ]
    write(tmp_path, "a.yaml", "# c\nrule:\n" + rule())
    assert validate_dir(tmp_path)[-1] == f"{f}:1: top level: missing key `rules`"
    write(tmp_path, "a.yaml", "\nrules: TX_AMOUNT > 1\n")
    assert validate_dir(tmp_path) == [f"{f}:2: top level: `rules` must be a list of rules"]
    write(tmp_path, "a.yaml", "rules:\n  - just a string\n")
    assert validate_dir(tmp_path) == [
        f"{f}:2: rule #1: must be a mapping (id, description, when, ...)"
    ]


def test_empty_directory_and_no_rules_are_errors(tmp_path: Path) -> None:
    assert validate_dir(tmp_path) == [f"{tmp_path}: no rule files (*.yaml, *.yml)"]
    write(tmp_path, "notes.txt", "rules:\n" + rule())
    assert validate_dir(tmp_path) == [f"{tmp_path}: no rule files (*.yaml, *.yml)"]
    write(tmp_path, "a.yaml", "rules: []\n")
    assert validate_dir(tmp_path) == [f"{tmp_path}: no rules in 1 rule file(s)"]
    missing = tmp_path / "nope"
    with pytest.raises(RuleError, match="not a directory"):
        load_rules(missing)


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"rules:\n  - id: \xff\n")
    assert only_problem(tmp_path).startswith(f"{tmp_path / 'a.yaml'}:1: not UTF-8 text")


def test_version_follows_contents(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "rules:\n" + rule())
    v1 = load_rules(tmp_path).version
    assert load_rules(tmp_path).version == v1
    write(tmp_path, "a.yaml", "# a comment is a change too\nrules:\n" + rule())
    v2 = load_rules(tmp_path).version
    write(tmp_path, "a.yaml", "rules:\n" + rule(score="0.8"))
    v3 = load_rules(tmp_path).version
    assert len({v1, v2, v3}) == 3
    write(tmp_path, "a.yaml", "rules:\n" + rule())
    assert load_rules(tmp_path).version == v1
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    assert load_rules(tmp_path).version != v1
    write(tmp_path, "README.md", "not a rule file")
    write(tmp_path, ".b.yaml.swp", "editor junk")
    write(tmp_path, "b.yaml~", "editor backup")
    assert load_rules(tmp_path).ids == ("big",)


def test_loading_never_rewrites_files(tmp_path: Path) -> None:
    text = "# header comment\nrules:\n  # why this rule exists\n" + rule() + "  # trailing\n"
    write(tmp_path, "a.yaml", text)
    load_rules(tmp_path)
    assert (tmp_path / "a.yaml").read_text() == text


def test_optional_keys(tmp_path: Path) -> None:
    extra = "enabled: false\nshadow: true\n"
    write(tmp_path, "a.yaml", "rules:\n" + rule(extra=extra) + rule(id="b"))
    ruleset = load_rules(tmp_path)
    assert (ruleset.get("big").enabled, ruleset.get("big").shadow) == (False, True)
    assert (ruleset.get("b").enabled, ruleset.get("b").shadow) == (True, False)
