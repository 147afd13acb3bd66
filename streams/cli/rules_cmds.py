"""``rules validate``, ``rules test`` and ``rules backtest``."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.errors import RuleError

app = typer.Typer(
    help="Rule files: validate, run their examples, backtest on history.", no_args_is_help=True
)


@app.command()
def validate(directory: Path = typer.Argument(..., help="rule directory")) -> None:
    """Check every rule file; print each problem as file:line: message."""
    from streams.rules.loader import load_rules, validate_dir

    problems = validate_dir(directory)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    rules = load_rules(directory)
    typer.echo(f"{directory}: {len(rules)} rules valid (version {rules.version})")


@app.command("test")
def test_examples(directory: Path = typer.Argument(..., help="rule directory")) -> None:
    """Run the examples written under each rule."""
    from streams.rules.examples import run_examples
    from streams.rules.loader import load_rules

    outcomes = run_examples(load_rules(directory))
    failed = [o for o in outcomes if not o.passed]
    for o in outcomes:
        mark = "ok  " if o.passed else "FAIL"
        typer.echo(f"{mark} {o.location} {o.rule_id}: expected {o.expected}, got {o.got}")
    typer.echo(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


def _raise(problems: list[str]) -> None:
    raise RuleError(problems)
