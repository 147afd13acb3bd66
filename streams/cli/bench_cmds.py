"""``bench``: the performance benchmark (streams.bench), a table on stdout and a JSON record."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli.options import Bootstrap, BrokerKind, ConfigFile, settings_from


def register(app: typer.Typer) -> None:
    app.command()(bench)


def bench(
    transactions: int = typer.Option(
        200_000, "--transactions", "-n", min=1, help="transactions per throughput measurement"
    ),
    json_path: Path | None = typer.Option(None, "--json", help="also write the results here"),
    offered_tps: float = typer.Option(
        5_000.0, "--offered-tps", min=1.0, help="steady rate for the latency measurement"
    ),
    latency_seconds: float = typer.Option(
        30.0, "--latency-seconds", min=0.1, help="measured seconds of steady traffic"
    ),
    memory_cards: int = typer.Option(
        1_000_000, "--memory-cards", min=1, help="distinct cards for the memory measurement"
    ),
    workers: str = typer.Option("1,2", help="stage-1 worker processes to measure, e.g. 1,2"),
    repeats: int = typer.Option(
        5,
        "--repeats",
        min=1,
        help="runs of each worker and of its passthrough peer, in turns, and of each rule set "
        "(median kept)",
    ),
    restore_days: int = typer.Option(
        183, "--restore-days", min=0, help="days of history per restore multiple (0: skip)"
    ),
    restore_multiples: str = typer.Option(
        "1,2,4", "--restore-multiples", help="history lengths for the restore, e.g. 1,2,4"
    ),
    logs: Path = typer.Option(Path("out/bench"), help="directory for the workers' logs"),
    bootstrap: Bootstrap = None,
    broker: BrokerKind = None,
    config: ConfigFile = None,
) -> None:
    """Measure stage 1, stage 2, the passthrough peers, latency and memory in one run."""
    import sys

    import orjson
    from rich.console import Console

    from streams.bench.report import print_table
    from streams.bench.run import BenchOptions, run_bench

    counts = _counts("--workers", workers)
    multiples = _counts("--restore-multiples", restore_multiples)
    settings = settings_from(config, bootstrap_servers=bootstrap, broker_kind=broker)
    err = Console(stderr=True)
    options = BenchOptions(
        transactions=transactions,
        offered_tps=offered_tps,
        latency_seconds=latency_seconds,
        memory_cards=memory_cards,
        workers=counts,
        repeats=repeats,
        restore_days=restore_days,
        restore_multiples=multiples,
        log_dir=logs,
    )
    say = (lambda what: err.log(what)) if sys.stderr.isatty() else (lambda what: None)
    result = run_bench(settings, options, say)
    print_table(result)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


def _counts(option: str, text: str) -> tuple[int, ...]:
    from streams.errors import ConfigError

    try:
        counts = tuple(sorted({int(w) for w in text.split(",") if w.strip()}))
    except ValueError:
        raise ConfigError(f"{option} must be numbers separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ConfigError(f"{option} needs at least one positive count")
    return counts
