"""Helpers the tests import: the repository's paths, the broker a test was given, settings
unique to one test. Fixtures live in the ``conftest.py`` files, which nothing imports."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from streams.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
# The handbook's published data set (DATA.md): beside the repository, not in it.
DATASET = REPO.parent / "shared" / "data" / "fdh" / "transactions.csv.gz"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str  # "external" | "kafka" | "testcontainers" | "embedded"


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
