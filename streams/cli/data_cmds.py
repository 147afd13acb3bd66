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
    big_amount: float = typer.Option(
        220.0, help="scenario 1: every amount above this is fraud (inf: no scenario 1)"
    ),
    terminals_per_day: int = typer.Option(
        2, help="scenario 2: terminals compromised each day (0: no scenario 2)"
    ),
    terminal_days: int = typer.Option(
        28, help="scenario 2: days a compromised terminal's transactions are all fraud"
    ),
    customers_per_day: int = typer.Option(
        3, help="scenario 3: cards compromised each day (0: no scenario 3)"
    ),
    customer_days: int = typer.Option(
        14, help="scenario 3: days a compromised card's transactions may be fraud"
    ),
    customer_share: str = typer.Option(
        "1/3",
        help="scenario 3: share of a compromised card's transactions in those days that are "
        "fraud, in (0, 1], a fraction (1/3) or a decimal (0.25)",
    ),
    customer_multiplier: float = typer.Option(
        5.0, help="scenario 3: a fraudulent transaction's amount is the genuine one times this"
    ),
    attributes: bool = typer.Option(
        False,
        "--attributes",
        help="add card_country, merchant_country, mcc and channel columns, and scenario 4 "
        "(cards used abroad in bursts)",
    ),
    abroad_cards_per_day: int = typer.Option(
        2, min=0, help="scenario 4 (with --attributes): cards used abroad each day (0: none)"
    ),
    abroad_burst: int = typer.Option(
        4, min=1, help="scenario 4: transactions of each burst, within 3 hours"
    ),
) -> None:
    """Write simulated transactions in the handbook's columns, with its three fraud scenarios
    (and, with --attributes, transaction attributes and a fourth scenario that needs them)."""
    from streams.data.simulate import simulate as run
    from streams.data.simulate import write_csv

    share = _simulation_checked(
        customers=customers,
        terminals=terminals,
        days=days,
        big_amount=big_amount,
        terminals_per_day=terminals_per_day,
        terminal_days=terminal_days,
        customers_per_day=customers_per_day,
        customer_days=customer_days,
        customer_share=customer_share,
        customer_multiplier=customer_multiplier,
    )
    df = run(
        customers=customers,
        terminals=terminals,
        days=days,
        start=start.date(),
        seed=seed,
        large_amount=big_amount,
        compromised_terminals_per_day=terminals_per_day,
        terminal_compromise_days=terminal_days,
        compromised_cards_per_day=customers_per_day,
        card_compromise_days=customer_days,
        compromised_card_share=share,
        compromised_card_multiplier=customer_multiplier,
        attributes=attributes,
        abroad_cards_per_day=abroad_cards_per_day,
        abroad_burst=abroad_burst,
    )
    write_csv(df, out)
    frauds = int(df["TX_FRAUD"].sum())
    typer.echo(f"wrote {df.height} transactions ({frauds} frauds) to {out}")


def _simulation_checked(
    *,
    customers: int,
    terminals: int,
    days: int,
    big_amount: float,
    terminals_per_day: int,
    terminal_days: int,
    customers_per_day: int,
    customer_days: int,
    customer_share: str,
    customer_multiplier: float,
) -> float:
    """``--customer-share`` as a float, after checking every simulate flag (``ConfigError``
    naming the first bad one)."""
    from fractions import Fraction

    from streams.errors import ConfigError

    at_least = (
        ("--customers", customers, 1),
        ("--terminals", terminals, 1),
        ("--days", days, 1),
        ("--terminals-per-day", terminals_per_day, 0),
        ("--terminal-days", terminal_days, 1),
        ("--customers-per-day", customers_per_day, 0),
        ("--customer-days", customer_days, 1),
    )
    for flag, value, least in at_least:
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if not big_amount > 0:  # also rejects nan
        raise ConfigError(f"--big-amount must be a positive amount, got {big_amount}")
    if not 0 < customer_multiplier < float("inf"):
        raise ConfigError(
            f"--customer-multiplier must be a positive number, got {customer_multiplier}"
        )
    try:
        share = Fraction(customer_share.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"--customer-share must be a fraction like 1/3 or a decimal like 0.25, "
            f"got {customer_share!r}"
        ) from None
    if not 0 < share <= 1:
        raise ConfigError(f"--customer-share must be in (0, 1], got {customer_share}")
    return float(share)


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
