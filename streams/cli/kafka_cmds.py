"""``broker`` and ``topics``."""

from __future__ import annotations

import contextlib

import typer

from streams.cli.options import Bootstrap, ConfigFile, settings_from
from streams.kafka.clients import broker_for
from streams.kafka.embedded import EmbeddedBroker
from streams.kafka.topics import create_topics, topic_names

topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(broker)
    app.add_typer(topics_app, name="topics")


def broker(port: int = typer.Option(9092, "--port", help="port on 127.0.0.1")) -> None:
    """Run the embedded Kafka broker (Tansu) in the foreground until Ctrl-C."""
    with EmbeddedBroker(port=port, quiet=False) as b:
        typer.echo(f"embedded Kafka broker on {b.bootstrap} (Ctrl-C to stop)", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            b.wait()


@topics_app.command("create")
def topics_create(
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
    partitions: int | None = typer.Option(None, help="partitions per topic [env FRAUD_PARTITIONS]"),
) -> None:
    """Create the topics (idempotent: existing topics are left as they are)."""
    settings = settings_from(config, bootstrap_servers=bootstrap, partitions=partitions)
    with broker_for(settings) as s:
        created = create_topics(s)
        for name in topic_names(s):
            typer.echo(f"{name}\t{'created' if name in created else 'exists'}")


@topics_app.command("list")
def topics_list(bootstrap: Bootstrap = None, config: ConfigFile = None) -> None:
    """List the project's topic names (from the settings)."""
    settings = settings_from(config, bootstrap_servers=bootstrap)
    for name in topic_names(settings):
        typer.echo(name)
