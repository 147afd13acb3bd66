"""``broker`` and ``topics``."""

from __future__ import annotations

import contextlib
import signal

import typer

from streams.cli.options import Bootstrap, ConfigFile, check_broker_kind, settings_from
from streams.kafka.apache import ApacheKafka
from streams.kafka.clients import broker_for
from streams.kafka.embedded import EmbeddedBroker
from streams.kafka.topics import create_topics, topic_names

topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(broker)
    app.add_typer(topics_app, name="topics")


def broker(
    kind: str = typer.Option(
        "embedded",
        "--kind",
        envvar="FRAUD_BROKER_KIND",
        callback=check_broker_kind,
        help="embedded (Tansu) or kafka (Apache Kafka in KRaft mode from the cached jars, needs "
        "Java 17+)",
    ),
    port: int = typer.Option(9092, "--port", help="(first node's) client port on 127.0.0.1"),
    nodes: int = typer.Option(1, "--nodes", min=1, help="Apache Kafka nodes (kafka only)"),
) -> None:
    """Run a broker in the foreground until SIGTERM or Ctrl-C; prints its bootstrap address
    on stdout once it is ready."""
    from streams.errors import ConfigError

    if kind == "embedded" and nodes != 1:
        raise ConfigError("--nodes needs --kind kafka (the embedded broker is one process)")
    settings_from()  # logging as configured
    running: EmbeddedBroker | ApacheKafka
    if kind == "kafka":
        running = ApacheKafka(nodes=nodes, port=port)
    else:
        running = EmbeddedBroker(port=port, quiet=False)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with running as b:
        name = "embedded Kafka broker" if kind == "embedded" else f"Apache Kafka ({nodes} node(s))"
        typer.echo(f"{name} on {b.bootstrap} (Ctrl-C to stop)", err=True)
        typer.echo(b.bootstrap)
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
