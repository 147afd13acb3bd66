"""Shared fixtures; the helpers tests import are in ``tests/support.py``.

The broker of the integration tests comes, in this order, from FRAUD_TEST_BOOTSTRAP (a broker
you run), Apache Kafka from the cached Maven jars whenever Java 17+ is present (unless
FRAUD_TEST_BROKER=embedded), testcontainers (when a Docker engine answers), or the embedded
Tansu broker. ``Broker.kind`` says which; the report header too. FRAUD_TEST_KAFKA_DIR keeps
the Apache Kafka nodes' folders (config, server.log, data) there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache

import pytest

from streams.settings import Settings
from tests.support import Broker, isolated_settings


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@lru_cache(maxsize=1)
def broker_choice() -> str:
    """The kind ``kafka_broker`` will give, decided without starting anything."""
    if os.environ.get("FRAUD_TEST_BOOTSTRAP"):
        return "external"
    wanted = os.environ.get("FRAUD_TEST_BROKER", "")
    if wanted == "embedded":
        return "embedded"
    from streams.kafka.apache_jars import java_available

    if wanted == "kafka" or java_available():
        return "kafka"
    if _docker_answers():
        return "testcontainers"
    return "embedded"


def pytest_report_header(config: pytest.Config) -> str:
    kind = broker_choice()
    if kind == "external":
        what = f"the broker at FRAUD_TEST_BOOTSTRAP={os.environ['FRAUD_TEST_BOOTSTRAP']}"
    elif kind == "kafka":
        from streams.kafka.apache_config import KAFKA_VERSION, jars_dir

        what = f"Apache Kafka {KAFKA_VERSION} (KRaft, 1 node) from the jars in {jars_dir()}"
    elif kind == "testcontainers":
        what = "Apache Kafka in a testcontainers container"
    else:
        what = "the embedded Tansu broker (no Java 17+, no Docker, or FRAUD_TEST_BROKER=embedded)"
    return f"integration tests broker: {what}"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    kind = broker_choice()
    if kind == "external":
        yield Broker(os.environ["FRAUD_TEST_BOOTSTRAP"], "external")
    elif kind == "kafka":
        from streams.kafka.apache import ApacheKafka

        with ApacheKafka(log_dir=os.environ.get("FRAUD_TEST_KAFKA_DIR") or None) as kafka:
            yield Broker(kafka.bootstrap, "kafka")
    elif kind == "testcontainers":
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:  # pragma: no cover
            from testcontainers.community.kafka import KafkaContainer  # type: ignore
        with KafkaContainer().with_kraft() as container:
            yield Broker(container.get_bootstrap_server(), "testcontainers")
    else:
        from streams.kafka.embedded import EmbeddedBroker

        with EmbeddedBroker() as broker:
            yield Broker(broker.bootstrap, "embedded")


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[Broker]:
    """Always the embedded Tansu broker: for a short smoke subset of what `make demo` and quick
    experiments run on, whichever broker the other integration tests get."""
    from streams.kafka.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield Broker(broker.bootstrap, "embedded")


@pytest.fixture
def settings(kafka_broker: Broker) -> Settings:
    return isolated_settings(kafka_broker.bootstrap)
