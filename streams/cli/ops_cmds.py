"""``config show`` and ``demo`` (``replay`` and ``dlq`` live in ``recovery_cmds``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer

from streams.cli.options import Bootstrap, BrokerKind, ConfigFile, settings_from

config_app = typer.Typer(help="Settings.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(demo)


@config_app.command("show")
def config_show(config: ConfigFile = None, bootstrap: Bootstrap = None) -> None:
    """Print the effective settings, secrets masked.

    Precedence: flags > FRAUD_* environment > config file > defaults."""
    settings = settings_from(config, bootstrap_servers=bootstrap)
    typer.echo(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())


def demo(
    transactions: int = typer.Option(20_000, "--transactions", "-n", help="simulated transactions"),
    rate: float = typer.Option(
        2000.0, help="offered transactions per second (0 = as fast as possible)"
    ),
    seed: int = typer.Option(7, help="simulation seed"),
    summary_json: Path | None = typer.Option(
        None, "--summary-json", help="also write the summary here"
    ),
    bootstrap: Bootstrap = None,
    broker: BrokerKind = None,
    config: ConfigFile = None,
) -> None:
    """The whole system: broker, topics, both workers, simulated traffic, live view, summary."""
    from streams.demo import run_demo

    settings = settings_from(config, bootstrap_servers=bootstrap, broker_kind=broker)
    summary = run_demo(settings, transactions, rate or None, seed)
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
