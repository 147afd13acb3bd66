"""Shared fixtures. The broker of the integration tests comes, in this order, from
FRAUD_TEST_BOOTSTRAP (a broker you run), Apache Kafka from the cached Maven jars whenever Java
17+ is present (unless FRAUD_TEST_BROKER=embedded), testcontainers (when a Docker engine
answers), or the embedded Tansu broker. ``Broker.kind`` says which; the report header too.
FRAUD_TEST_KAFKA_DIR keeps the Apache Kafka nodes' folders (config, server.log, data) there."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

from streams.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "data" / "fdh" / "transactions.csv.gz"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str  # "external" | "kafka" | "testcontainers" | "embedded"


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


def isolated_settings(bootstrap: str, **overrides: object) -> Settings:
    """Settings whose topics, groups and app id are unique to one test."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "topic_transactions": f"t-{tag}.transactions",
        "topic_flagged": f"t-{tag}.transactions.flagged",
        "topic_decisions": f"t-{tag}.decisions",
        "topic_labels": f"t-{tag}.labels",
        "topic_dlq": f"t-{tag}.transactions.dlq",
        "topic_flagged_dlq": f"t-{tag}.transactions.flagged.dlq",
        "stage1_group": f"stage1-{tag}",
        "stage2_app_id": f"stage2-{tag}",
        "partitions": 2,
        "rules_dir": REPO / "rules",
        "model_dir": REPO / "models" / "default",
        "policy_file": REPO / "config" / "policy.yaml",
    }
    names.update(overrides)
    return load_settings(bootstrap_servers=bootstrap, **names)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as FRAUD_* environment variables, for worker subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update(settings.as_env())
    return env


@pytest.fixture
def settings(kafka_broker: Broker) -> Settings:
    return isolated_settings(kafka_broker.bootstrap)


@pytest.fixture(scope="session")
def dataset() -> Path:
    if not DATASET.is_file():
        pytest.skip(
            f"benchmark data set absent: {DATASET} (it lives in ../shared, not in the repo)"
        )
    return DATASET
