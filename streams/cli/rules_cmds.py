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


@app.command()
def backtest(
    directory: Path = typer.Argument(..., help="rule directory to measure"),
    data: Path = typer.Option(..., "--data", help="labelled handbook-format CSV"),
    start: str | None = typer.Option(None, "--from", help="first day counted (YYYY-MM-DD)"),
    end: str | None = typer.Option(None, "--to", help="day after the last counted"),
    against: Path | None = typer.Option(None, "--against", help="another rule directory"),
    report: Path = typer.Option(Path("out/backtest.md"), "--report", help="report file"),
    config: Path | None = typer.Option(None, "--config", help="YAML settings file"),
) -> None:
    """Run a rule set with the real stage-1 code over labelled history; per-rule table."""
    from datetime import datetime

    from rich.console import Console
    from rich.markdown import Markdown

    from streams.cli.options import settings_from
    from streams.cli.progress import progress_bar
    from streams.data.handbook import read_handbook, to_epoch_ms
    from streams.rules.backtest import report_markdown, rules_over_budget, run_backtest

    settings = settings_from(config)
    df = read_handbook(data)
    if "TX_FRAUD" not in df.columns:
        raise RuleError([f"{data}: no TX_FRAUD column: a backtest needs labels"])
    lo = to_epoch_ms(datetime.strptime(start, "%Y-%m-%d")) if start else None
    hi = to_epoch_ms(datetime.strptime(end, "%Y-%m-%d")) if end else None
    with progress_bar(df.height, f"backtest {directory}") as advance:
        result = run_backtest(directory, df, settings, lo, hi, advance)
    other = None
    if against is not None:
        with progress_bar(df.height, f"backtest {against}") as advance:
            other = run_backtest(against, df, settings, lo, hi, advance)
    text = report_markdown(result, other, settings.stage1_max_forward_share)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    Console().print(Markdown(text))
    typer.echo(f"report written to {report}")
    warning = rules_over_budget(result, settings.stage1_max_forward_share)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
