"""``simulate``, ``produce`` and ``features``."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import typer

from streams.cli.options import Bootstrap, ConfigFile, settings_from
from streams.cli.progress import progress_bar


def register(app: typer.Typer) -> None:
    app.command()(simulate)
    app.command()(produce)
    app.command()(features)


def simulate(
    out: Path = typer.Option(..., "--out", help="CSV to write (.csv or .csv.gz)"),
    customers: int = typer.Option(5000, help="number of cards"),
    terminals: int = typer.Option(10000, help="number of terminals"),
    days: int = typer.Option(183, help="days of transactions"),
    start: datetime = typer.Option("2018-04-01", formats=["%Y-%m-%d"], help="first day"),
    seed: int = typer.Option(0, help="random seed (same seed, same file)"),
) -> None:
    """Write simulated transactions in the handbook's columns, with its three fraud scenarios."""
    from streams.data.simulate import simulate as run
    from streams.data.simulate import write_csv

    df = run(customers=customers, terminals=terminals, days=days, start=start.date(), seed=seed)
    write_csv(df, out)
    frauds = int(df["TX_FRAUD"].sum())
    typer.echo(f"wrote {df.height} transactions ({frauds} frauds) to {out}")


def produce(
    data: Path = typer.Option(..., "--data", help="handbook-format CSV (.csv or .csv.gz)"),
    label_delay_days: float = typer.Option(
        7.0, help="publish each label this long after its transaction (event time)"
    ),
    rate: float | None = typer.Option(
        None, help="transactions per second (default: as fast as possible)"
    ),
    flush_labels: bool = typer.Option(
        False, help="at the end, also publish labels whose delay has not passed"
    ),
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
) -> None:
    """Publish a handbook CSV to the transactions topic, and its labels to the labels topic."""
    from streams.data.handbook import read_handbook
    from streams.data.produce import produce_history
    from streams.kafka.clients import broker_for
    from streams.kafka.topics import create_topics

    settings = settings_from(config, bootstrap_servers=bootstrap)
    df = read_handbook(data)
    with broker_for(settings) as s:
        create_topics(s)
        with progress_bar(df.height, "produce") as advance:
            stats = produce_history(df, s, label_delay_days, rate, advance, flush_labels)
    typer.echo(
        f"published {stats.transactions} transactions and {stats.labels} labels "
        f"to {s.topic_transactions} / {s.topic_labels}"
    )


def features(
    data: Path = typer.Option(..., "--data", help="handbook-format CSV"),
    out: Path = typer.Option(..., "--out", help="CSV to write"),
) -> None:
    """Compute the stage-1 features over a history in stream order (the worker's own code)."""
    import polars as pl

    from streams.data.handbook import read_handbook
    from streams.features.names import HANDBOOK_FEATURES, MODEL_FEATURES
    from streams.features.offline import compute_features

    df = read_handbook(data)
    with progress_bar(df.height, "features") as advance:
        feats = compute_features(df, progress=advance)
    extras = [c for c in MODEL_FEATURES if c not in HANDBOOK_FEATURES]
    frame = pl.concat(
        [df.select("TRANSACTION_ID"), feats.select(HANDBOOK_FEATURES + extras)], how="horizontal"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    typer.echo(f"wrote {frame.height} rows × {frame.width - 1} features to {out}")


def parse_day(value: str) -> date:
    return datetime.strptime(value, "%Y-%m-%d").date()
