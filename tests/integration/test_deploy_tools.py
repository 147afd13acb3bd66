"""The production stack's files checked by the tools that read them in production: the
docker compose CLI (no engine needed) and Prometheus's promtool, each skipped when absent."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ALERTS, ALERTS_TEST, COMPOSE, PROMETHEUS_CONFIG, REPO, dashboard_targets

pytestmark = pytest.mark.integration


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` if installed; needs no engine."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_validates_with_the_compose_cli() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI (apt-get install docker-compose)")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@needs_promtool
def test_promtool_check_config() -> None:
    promtool("check", "config", str(PROMETHEUS_CONFIG))


@needs_promtool
def test_promtool_check_rules() -> None:
    promtool("check", "rules", str(ALERTS))


@needs_promtool
def test_promtool_alert_unit_tests() -> None:
    promtool("test", "rules", str(ALERTS_TEST))


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    grafana_vars = {"$stage": ".*", "$__rate_interval": "1m", "$__interval": "1m"}
    rules = []
    for i, (_, expr) in enumerate(dashboard_targets()):
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:panel_query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))
