"""The production stack's files: compose, Dockerfile, Prometheus, alerts, Grafana.

No Docker engine is needed: the files are parsed and cross-checked against the code (settings
fields, metric names and labels). The checks that run docker compose and promtool are in
``tests/integration/test_deploy_tools.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from ruamel.yaml import YAML

from streams.observability import metrics
from streams.settings import Settings
from tests.support import (
    ALERTS,
    COMPOSE,
    DASHBOARD,
    DOCKERFILE,
    GRAFANA,
    PROMETHEUS_CONFIG,
    REPO,
    dashboard_targets,
)

WORKERS = ("stage1", "stage2")
METRIC_RE = re.compile(r"\bfraudstream_[A-Za-z0-9_]+")
SELECTOR_RE = re.compile(r"\b(fraudstream_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


# --- metric names as the registry knows them ------------------------------------------------------
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exposed_names() -> dict[str, str]:
    """Every series name the metrics module exposes → its family name."""
    assert metrics.TRANSACTIONS_CONSUMED is not None  # the module is imported and registered
    out: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("fraudstream_"):
            for suffix in SUFFIXES[family.type]:
                out[family.name + suffix] = family.name
    return out


def family_labels() -> dict[str, set[str]]:
    labels = {
        obj._name: set(obj._labelnames)
        for obj in vars(metrics).values()
        if getattr(obj, "_name", "").startswith("fraudstream_") and hasattr(obj, "_labelnames")
    }
    for name, keys in metrics.INFO_LABELS.items():
        labels[name] |= set(keys)
    return labels


def check_expr(expr: str, where: str) -> None:
    names = exposed_names()
    labels = family_labels()
    used = METRIC_RE.findall(expr)
    unknown = sorted(set(used) - set(names))
    assert not unknown, f"{where}: unknown metric(s) {unknown} in {expr!r}"
    allowed = set(TARGET_LABELS) | {"le"}
    for name in used:
        allowed |= labels[names[name]]
    for name, body in SELECTOR_RE.findall(expr):
        own = labels[names[name]] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        bad = set(MATCHER_RE.findall(body)) - own - {"__name__"}
        assert not bad, f"{where}: {name} has no label(s) {sorted(bad)}"
    for group in GROUPING_RE.findall(expr):
        grouped = {g.strip() for g in group.split(",") if g.strip()}
        bad = grouped - allowed
        assert not bad, f"{where}: grouping by unknown label(s) {sorted(bad)} in {expr!r}"


def test_metric_name_check_catches_typos() -> None:
    check_expr('sum by (le) (rate(fraudstream_end_to_end_seconds_bucket{stage="a"}[5m]))', "ok")
    for bad in (
        "fraudstream_transactions_consumed",  # a counter is exposed with _total
        "fraudstream_score_total",
        'fraudstream_decisions_total{kind="x"}',
        "sum by (topic) (fraudstream_decisions_total)",
    ):
        with pytest.raises(AssertionError):
            check_expr(bad, "typo")


# --- docker-compose.yml ---------------------------------------------------------------------------
def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "topics", "stage1", "stage2", "prometheus", "grafana"} <= set(services)


def test_kafka_is_apache_kraft_with_healthcheck(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["healthcheck"]["test"]


def test_topics_job_runs_once_after_kafka_is_healthy(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics.get("restart", "no") == "no"
    assert env_of(topics)["FRAUD_BOOTSTRAP_SERVERS"] == "kafka:9092"


@pytest.mark.parametrize("name", WORKERS)
def test_workers_are_scalable_and_configured_by_env(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    assert svc["command"] == [name]
    assert "container_name" not in svc, "a fixed container name prevents --scale"
    assert "ports" not in svc, "a host port clashes between replicas; use expose"
    env = env_of(svc)
    assert env["FRAUD_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["FRAUD_METRICS_PORT"] == "9100"
    assert [str(p) for p in svc["expose"]] == ["9100"]
    assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v for v in svc["volumes"]}
    for host, target in (("./rules", "/app/rules"), ("./models", "/app/models")):
        assert mounts[target] == f"{host}:{target}:ro"
    assert env["FRAUD_RULES_DIR"].startswith("/app/rules")
    assert env["FRAUD_MODEL_DIR"].startswith("/app/models")
    assert "9100/healthz" in " ".join(svc["healthcheck"]["test"])


def fraud_env_names(compose: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name, svc in compose["services"].items():
        for key in env_of(svc):
            if key.startswith("FRAUD_"):
                yield name, key


def test_every_fraud_env_name_is_a_settings_field(compose: dict[str, Any]) -> None:
    fields = Settings.model_fields
    aliases = {f.alias for f in fields.values() if f.alias}
    names = list(fraud_env_names(compose))
    assert len(names) >= 5
    for service, key in names:
        field = key.removeprefix("FRAUD_").lower()
        assert field in fields or key in aliases, f"{service}: {key} is no Settings field"


def test_fraud_env_values_are_valid_settings(compose: dict[str, Any]) -> None:
    for name in ("topics", *WORKERS):
        env = {
            k.removeprefix("FRAUD_").lower(): v
            for k, v in env_of(compose["services"][name]).items()
            if k.startswith("FRAUD_")
        }
        Settings.model_validate(env)  # type conversion (ints, bools, literals) must succeed


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        for volume in compose["services"][name]["volumes"]:
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"{name}: {host} missing"
    prom_targets = {v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= prom_targets


# --- Dockerfile ---------------------------------------------------------------------------------
def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    assert re.search(r"pip install \.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["fraudstream"\]$', text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# --- Prometheus ---------------------------------------------------------------------------------
def test_prometheus_scrapes_every_replica_through_docker_dns(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for worker in WORKERS:
        sd = jobs[worker]["dns_sd_configs"][0]
        assert sd["names"] == [worker]
        assert sd["type"] == "A"
        assert str(sd["port"]) == env_of(compose["services"][worker])["FRAUD_METRICS_PORT"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file()


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_alerts_cover_the_failure_modes() -> None:
    rules = alert_rules()
    exprs = " ".join(str(r["expr"]) for r in rules)
    for needle in (
        "fraudstream_dead_letters_total",
        "fraudstream_consumer_lag",
        'fraudstream_drift_psi{signal="flag_rate"}',
        "fraudstream_broker_up",
        "fraudstream_decisions_total",
        'fraudstream_rule_reloads_total{result="failure"}',
    ):
        assert needle in exprs, needle
    assert "0.25" in next(str(r["expr"]) for r in rules if r["alert"] == "FraudstreamFlagRateDrift")
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_alert_expressions_use_defined_metrics() -> None:
    for rule in alert_rules():
        check_expr(str(rule["expr"]), rule["alert"])


# --- Grafana ------------------------------------------------------------------------------------
def test_dashboard_parses_and_uses_the_provisioned_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "fraudstream"
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "fraudstream.yml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_dashboard_covers_the_operational_questions() -> None:
    titles = " ".join(t for t, _ in dashboard_targets()).lower()
    exprs = " ".join(e for _, e in dashboard_targets())
    for word in ("transactions", "flag rate", "decisions", "latency", "lag", "dead letters"):
        assert word in titles, word
    for needle in (
        "histogram_quantile(0.5, sum by (le, stage) (rate(fraudstream_end_to_end_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, stage) (rate(fraudstream_end_to_end_seconds_bucket",
        "fraudstream_rule_hits_total",
        "fraudstream_drift_psi",
        "fraudstream_rules_info",
        "fraudstream_model_info",
    ):
        assert needle in exprs, needle


def test_dashboard_expressions_use_defined_metrics() -> None:
    targets = dashboard_targets()
    assert len(targets) >= 15
    for title, expr in targets:
        check_expr(expr, f"panel {title!r}")
