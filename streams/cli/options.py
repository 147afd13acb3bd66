"""Options shared by several commands, and the one way to build settings from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from streams.logging_setup import setup_logging
from streams.settings import Settings, load_settings

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        help="Kafka bootstrap servers [env FRAUD_BOOTSTRAP_SERVERS]; "
        "unset = start a broker (--broker)",
        show_default=False,
    ),
]
BROKER_KINDS = ("embedded", "kafka")


def check_broker_kind(value: str | None) -> str | None:
    if value is not None and value not in BROKER_KINDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(BROKER_KINDS)}")
    return value


BrokerKind = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="broker to start when no --bootstrap is given: embedded (Tansu) or kafka (Apache "
        "Kafka from the cached jars, needs Java 17+) [env FRAUD_BROKER_KIND]",
        show_default=False,
        callback=lambda value: check_broker_kind(value),
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file [env FRAUD_CONFIG]", show_default=False),
]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="serve /metrics, /healthz, /readyz [env FRAUD_METRICS_PORT]",
        show_default=False,
    ),
]
RulesDir = Annotated[
    Path | None,
    typer.Option("--rules", help="rule directory [env FRAUD_RULES_DIR]", show_default=False),
]


def check_model_dir(value: Path | None) -> Path | None:
    """Load the model named by ``--model`` at once, so that a missing or broken model is a
    one-line ModelError before any broker is started or contacted."""
    if value is not None:
        from streams.stage2.model import RiskModel

        RiskModel.load(value)  # raises ModelError naming the directory and the problem
    return value


ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="model directory [env FRAUD_MODEL_DIR]",
        show_default=False,
        callback=check_model_dir,
    ),
]


def settings_from(config: Path | None = None, **overrides: Any) -> Settings:
    settings = load_settings(config, **overrides)
    setup_logging(settings.log_level, settings.log_format, settings.secret_values())
    return settings
