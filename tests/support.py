"""Helpers the tests import: the repository's paths, the broker a test was given, settings
unique to one test. Fixtures live in the ``conftest.py`` files, which nothing imports."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from streams.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
# The handbook's published data set (DATA.md): beside the repository, not in it.
DATASET = REPO.parent / "shared" / "data" / "fdh" / "transactions.csv.gz"

# The production stack's files.
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fraudstream.json"


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
        # co-partitioned with this test's transactions (a shared one is off when they differ)
        "topic_checkpoints": f"t-{tag}.stage1.checkpoints",
        "stage1_group": f"stage1-{tag}",
        "stage2_app_id": f"stage2-{tag}",
        "partitions": 2,
        "rules_dir": REPO / "rules",
        "model_dir": REPO / "models" / "default",
        "policy_file": REPO / "config" / "policy.yaml",
    }
    names.update(overrides)
    return load_settings(bootstrap_servers=bootstrap, **names)


def assert_one_error_line(code: int, err: str, *fragments: str) -> str:
    """The command line's user-error contract: a non-zero exit and one ``error:`` line on
    stderr, holding every fragment, no traceback. Returns the line."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def dashboard_targets() -> list[tuple[str, str]]:
    """The Grafana dashboard's queries: (panel title, PromQL expression)."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out
