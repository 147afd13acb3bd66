"""Shared fixtures. The broker comes, in this order, from FRAUD_TEST_BOOTSTRAP (a broker you
run), testcontainers (when a Docker engine answers), or the embedded Tansu broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "data" / "fdh" / "transactions.csv.gz"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str  # "external" | "testcontainers" | "embedded"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    external = os.environ.get("FRAUD_TEST_BOOTSTRAP")
    if external:
        yield Broker(external, "external")
        return
    if _docker_answers():
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:  # pragma: no cover
            from testcontainers.community.kafka import KafkaContainer  # type: ignore
        with KafkaContainer().with_kraft() as container:
            yield Broker(container.get_bootstrap_server(), "testcontainers")
        return
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
