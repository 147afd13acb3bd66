"""``stage1`` and ``stage2``: the workers, running until SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from typing import Any

import typer

from streams.cli.options import (
    Bootstrap,
    ConfigFile,
    MetricsPort,
    ModelDir,
    RulesDir,
    check_model_dir,
    settings_from,
)
from streams.kafka.clients import broker_for
from streams.kafka.topics import create_topics
from streams.settings import Settings

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command()(stage1)
    app.command()(stage2)


def stage1(
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
    metrics_port: MetricsPort = None,
    rules: RulesDir = None,
    exactly_once: bool = typer.Option(False, "--exactly-once", help="Kafka transactions"),
) -> None:
    """Stage-1 worker: screen every transaction, forward the suspicious ones."""
    from streams.stage1.worker import Stage1Worker

    settings = settings_from(
        config,
        bootstrap_servers=bootstrap,
        metrics_port=metrics_port,
        rules_dir=rules,
        exactly_once=exactly_once or None,
    )
    with _worker_broker(settings, "stage1") as s:
        create_topics(s)
        worker = Stage1Worker(s)

        def stop(signum: int, frame: Any) -> None:
            log.info("signal %d: finishing the batch and stopping", signum)
            worker.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        with _serve_metrics(s.metrics_port, lambda: bool(worker.stats.assigned)):
            stats = worker.run()
        log.info("stage 1 stopped: %s", stats)


def stage2(
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
    metrics_port: MetricsPort = None,
    model: ModelDir = None,
    exactly_once: bool = typer.Option(
        False, "--exactly-once", help="faust's Kafka transactions (Apache Kafka)"
    ),
) -> None:
    """Stage-2 worker (faust): score flagged transactions with XGBoost, publish decisions."""
    from streams.stage2.app import build_app, is_ready, run_worker

    settings = settings_from(
        config,
        bootstrap_servers=bootstrap,
        metrics_port=metrics_port,
        model_dir=model,
        stage2_exactly_once=exactly_once or None,
    )
    check_model_dir(settings.model_dir)  # a bad FRAUD_MODEL_DIR fails before any broker work
    with _worker_broker(settings, "stage2") as s:
        create_topics(s)
        app = build_app(s)
        with _serve_metrics(s.metrics_port, lambda: is_ready(app)):
            run_worker(app, settings=s)


@contextlib.contextmanager
def _worker_broker(settings: Settings, stage: str) -> Iterator[Settings]:
    """A configured broker is waited for (backoff, logged, ``broker_up`` metric) rather than
    failing at once: a worker started before Kafka, or during an outage, comes up with it."""
    if not settings.bootstrap_servers:
        with broker_for(settings) as s:
            yield s
        return
    from streams.kafka.broker_wait import wait_for_broker

    wait_for_broker(settings, stage)
    yield settings


def _serve_metrics(port: int | None, ready: Callable[[], bool]) -> Any:
    """Serve /metrics, /healthz and /readyz when a port is configured."""
    from streams.observability.server import start_http_server

    if port is None:
        return contextlib.nullcontext()
    return start_http_server(port, health=lambda: True, ready=ready)
