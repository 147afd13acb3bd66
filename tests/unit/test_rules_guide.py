"""The rules guide's examples run: every `rules:` YAML block of docs/rules.md is a valid rule
file against the example directory's schema and lists, and its written examples pass; the
example directory itself passes `rules validate` and `rules test`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from streams.rules.examples import run_examples
from streams.rules.loader import load_rules, validate_dir

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "rules.md"
EXAMPLE = ROOT / "examples" / "attribute-rules"
BLOCKS = [
    block
    for block in re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    if block.startswith("rules:")
]


def test_the_guide_has_rule_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_rule_block_of_the_guide_is_valid_and_its_examples_pass(
    block: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(EXAMPLE / "schema.yaml", rules / "schema.yaml")
    shutil.copytree(EXAMPLE / "lists", rules / "lists")
    (rules / "guide.yaml").write_text(block)
    assert validate_dir(rules, check_examples=True) == []
    outcomes = run_examples(load_rules(rules))
    assert all(o.passed for o in outcomes)


def test_the_example_directory_validates_and_its_examples_pass() -> None:
    assert validate_dir(EXAMPLE, check_examples=True) == []
    outcomes = run_examples(load_rules(EXAMPLE))
    assert len(outcomes) >= 8 and all(o.passed for o in outcomes)
