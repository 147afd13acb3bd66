"""The ``fraudstream`` command (typer). User errors print one line on stderr and exit 2."""

from __future__ import annotations

import sys

import typer

from streams import __version__
from streams.cli import data_cmds, kafka_cmds, model_cmds, ops_cmds, rules_cmds, worker_cmds
from streams.errors import FraudstreamError

app = typer.Typer(
    name="fraudstream",
    help="Kafka-native two-stage fraud detection: stage 1 screens every transaction, "
    "stage 2 scores the suspicious few with XGBoost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fraudstream {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """fraudstream: see README.md for the flow, topics and configuration."""


for module in (kafka_cmds, worker_cmds, data_cmds, model_cmds, ops_cmds):
    module.register(app)
app.add_typer(rules_cmds.app, name="rules")
app.add_typer(ops_cmds.dlq_app, name="dlq")
app.add_typer(ops_cmds.config_app, name="config")


def main() -> None:
    try:
        app()
    except FraudstreamError as exc:
        message = str(exc).strip() or type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
