"""The metrics module: names, types, labels, helpers; and the HTTP endpoints."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from streams.observability import metrics as m
from streams.observability.server import start_http_server

EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    # family name (as collected) -> (type, labels)
    "fraudstream_transactions_consumed": ("counter", ("stage",)),
    "fraudstream_transactions_flagged": ("counter", ()),
    "fraudstream_decisions": ("counter", ("stage", "action")),
    "fraudstream_dead_letters": ("counter", ("stage", "kind")),
    "fraudstream_retries": ("counter", ("stage", "kind")),
    "fraudstream_rule_hits": ("counter", ("rule", "shadow")),
    "fraudstream_score": ("histogram", ("stage", "model")),
    "fraudstream_batch_size": ("histogram", ("stage",)),
    "fraudstream_processing_seconds": ("histogram", ("stage",)),
    "fraudstream_end_to_end_seconds": ("histogram", ("stage",)),
    "fraudstream_consumer_lag": ("gauge", ("stage", "topic", "partition")),
    "fraudstream_rules": ("info", ()),
    "fraudstream_model": ("info", ()),
    "fraudstream_rule_reloads": ("counter", ("result",)),
    "fraudstream_broker_up": ("gauge", ("stage",)),
    "fraudstream_labels_consumed": ("counter", ()),
    "fraudstream_labels_late": ("counter", ()),
    "fraudstream_label_wait_timeouts": ("counter", ()),
    "fraudstream_online_model_updates": ("counter", ("model",)),
    "fraudstream_drift_psi": ("gauge", ("stage", "signal")),
    "fraudstream_flag_rate": ("gauge", ()),
    "fraudstream_stage1_recall": ("gauge", ("partition",)),
    "fraudstream_stage1_budget": ("gauge", ("partition",)),
    "fraudstream_stage1_budget_maximum": ("gauge", ()),
    "fraudstream_stage1_recall_target": ("gauge", ()),
    "fraudstream_stage1_forward_share": ("gauge", ("partition",)),
    "fraudstream_rules_forward_share": ("gauge", ()),
    "fraudstream_stage1_checkpoints": ("counter", ("result",)),
    "fraudstream_stage1_checkpoint_seconds": ("counter", ()),
    "fraudstream_stage1_checkpoint_bytes": ("gauge", ("partition",)),
}


def value(name: str, **labels: str) -> float:
    v = REGISTRY.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_every_metric_is_registered_with_its_type_and_labels() -> None:
    found = {
        metric._name: (metric._type, metric._labelnames)
        for metric in vars(m).values()
        if hasattr(metric, "_labelnames")
        and getattr(metric, "_name", "").startswith("fraudstream_")
    }
    assert found == EXPECTED
    families = {f.name for f in REGISTRY.collect()}
    assert set(EXPECTED) <= families


def test_end_to_end_buckets_span_1ms_to_10s_and_score_0_to_1() -> None:
    assert m.LATENCY_BUCKETS[0] == 0.001 and m.LATENCY_BUCKETS[-1] == 10.0
    assert min(m.SCORE_BUCKETS) > 0 and max(m.SCORE_BUCKETS) == 1.0


def test_counter_helpers() -> None:
    before = value("fraudstream_transactions_consumed_total", stage="t1")
    m.record_consumed("t1", 5)
    m.record_consumed("t1", 0)
    assert value("fraudstream_transactions_consumed_total", stage="t1") == before + 5

    m.record_decisions("t1", {"approve": 3, "decline": 1})
    assert value("fraudstream_decisions_total", stage="t1", action="decline") >= 1
    m.record_dead_letter("t1", "decode")
    m.record_retry("t1", "timeout", 2)
    assert value("fraudstream_retries_total", stage="t1", kind="timeout") >= 2
    m.record_rule_hits({"r_amount": 2, "r_none": 0}, shadow=True)
    assert value("fraudstream_rule_hits_total", rule="r_amount", shadow="true") >= 2
    assert (
        REGISTRY.get_sample_value(
            "fraudstream_rule_hits_total", {"rule": "r_none", "shadow": "true"}
        )
        is None
    )
    failures = value("fraudstream_rule_reloads_total", result="failure")
    m.record_rule_reload(False)
    assert value("fraudstream_rule_reloads_total", result="failure") == failures + 1
    m.record_flagged(2)
    m.record_labels_consumed(3)
    m.record_online_model_update("hst", 4)
    assert value("fraudstream_online_model_updates_total", model="hst") >= 4


def test_init_stage_creates_zero_series() -> None:
    m.init_stage(m.STAGE2)
    for action in m.ACTIONS:
        assert (
            REGISTRY.get_sample_value(
                "fraudstream_decisions_total", {"stage": "stage2", "action": action}
            )
            is not None
        )
    assert REGISTRY.get_sample_value("fraudstream_broker_up", {"stage": "stage2"}) is not None


def test_gauges_and_info() -> None:
    m.set_consumer_lag("t2", "transactions", 3, 42)
    assert value("fraudstream_consumer_lag", stage="t2", topic="transactions", partition="3") == 42
    m.clear_consumer_lag("t2", "transactions", 3)
    m.clear_consumer_lag("t2", "transactions", 3)  # twice is fine
    assert (
        REGISTRY.get_sample_value(
            "fraudstream_consumer_lag", {"stage": "t2", "topic": "transactions", "partition": "3"}
        )
        is None
    )
    m.set_broker_up("t2", False)
    assert value("fraudstream_broker_up", stage="t2") == 0
    m.set_rules_version("rules-7")
    assert value("fraudstream_rules_info", version="rules-7") == 1
    m.set_model_version("xgb-3", challenger="xgb-4")
    assert value("fraudstream_model_info", version="xgb-3", challenger="xgb-4") == 1


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.01, 0.011, 0.5, 0.99, 1.0, 1.5],  # exact bounds, above the last bound
        np.random.default_rng(3).uniform(0, 1, 500),
        [float("nan"), 0.2],
        [],
    ],
)
def test_batch_observe_equals_one_by_one(values: list[float]) -> None:
    reg = CollectorRegistry()
    bulk = Histogram("bulk", "x", buckets=m.SCORE_BUCKETS, registry=reg)
    loop = Histogram("loop", "x", buckets=m.SCORE_BUCKETS, registry=reg)
    m._observe_many(bulk, values)
    for v in values:
        if v == v:  # the bulk path drops NaN; so does this reference
            loop.observe(float(v))

    def samples(h: str) -> list[tuple[str, float]]:
        fam = next(f for f in reg.collect() if f.name == h)
        return [
            (s.name[len(h) :] + s.labels.get("le", ""), s.value)
            for s in fam.samples
            if not s.name.endswith("_created")
        ]

    got, want = samples("bulk"), samples("loop")
    assert [k for k, _ in got] == [k for k, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])


def test_histogram_helpers() -> None:
    count = value("fraudstream_score_count", stage="t3", model="xgb")
    m.observe_scores("t3", "xgb", [0.1, 0.9])
    assert value("fraudstream_score_count", stage="t3", model="xgb") == count + 2
    m.observe_batch("t3", 500, 0.012)
    assert value("fraudstream_batch_size_count", stage="t3") == 1
    assert value("fraudstream_processing_seconds_sum", stage="t3") == pytest.approx(0.012)
    m.observe_end_to_end_since("t3", [1_000_000.0, 1_000_000.0], now=1_000.020)
    assert value("fraudstream_end_to_end_seconds_count", stage="t3") == 2
    assert value("fraudstream_end_to_end_seconds_bucket", stage="t3", le="0.025") == 2
    assert value("fraudstream_end_to_end_seconds_bucket", stage="t3", le="0.01") == 0


def test_drift_tracker_publishes_psi_and_flag_rate() -> None:
    tracker = m.DriftTracker("t4", reference_size=1000, window_size=1000)
    assert tracker.observe_flags(20, 1000) is None  # reference only
    assert tracker.observe_flags(150, 1000) is not None
    assert value("fraudstream_flag_rate") == pytest.approx(0.15)
    assert value("fraudstream_drift_psi", stage="t4", signal="flag_rate") > 0.25
    rng = np.random.default_rng(0)
    tracker.observe_scores(rng.uniform(0, 1, 1000))
    tracker.observe_scores(rng.uniform(0, 1, 1000))
    assert value("fraudstream_drift_psi", stage="t4", signal="score") < 0.05
    tracker.observe_actions({"approve": 990, "review": 10})
    tracker.observe_actions({"approve": 500, "review": 300, "decline": 200})
    assert value("fraudstream_drift_psi", stage="t4", signal="decision_mix") > 0.25
    tracker.reset()
    assert tracker.observe_flags(1, 10) is None


# --- the HTTP endpoints -------------------------------------------------------------------------
def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def test_server_serves_metrics_and_probes() -> None:
    state = {"alive": True, "ready": False}
    m.init_stage(m.STAGE1)
    m.record_consumed(m.STAGE1, 1)
    server = start_http_server(0, lambda: state["alive"], lambda: state["ready"])
    try:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"
        status, ctype, body = get(base + "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        for family in EXPECTED:
            if EXPECTED[family][1] == () or family == "fraudstream_transactions_consumed":
                assert f"# TYPE {family}" in body, family
        assert 'fraudstream_transactions_consumed_total{stage="stage1"}' in body

        assert get(base + "/healthz")[::2] == (200, "ok\n")
        assert get(base + "/readyz")[0] == 503
        state["ready"] = True
        assert get(base + "/readyz")[0] == 200
        state["alive"] = False
        assert get(base + "/healthz")[0] == 503
        assert get(base + "/nothing")[0] == 404
    finally:
        server.close()


def test_server_probe_that_raises_is_unhealthy_and_close_frees_the_port() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    with start_http_server(0, broken, broken, host="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.port}"
        assert get(base + "/healthz")[0] == 503
        assert get(base + "/readyz")[0] == 503
        port = server.port
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_stage1_recall_gauges_follow_the_partitions_controllers() -> None:
    from pathlib import Path

    from streams.rules.model import RuleSet
    from streams.stage1.policy import FlagPolicy, RecallController
    from streams.stage1.screen import Screener
    from streams.stage1.telemetry import Stage1Telemetry

    rules = RuleSet((), "empty", Path("."))
    telemetry = Stage1Telemetry(rules)
    parts = {}
    for partition in (0, 1):
        controller = RecallController(target=0.9, floor=0.02, maximum=0.1, min_frauds=2)
        screener = Screener(rules, FlagPolicy(controller=controller))
        parts[partition] = screener
    parts[0].policy.controller.observe(0.0, True)
    parts[0].policy.controller.observe(0.5, False)  # beyond any budget: the maximum
    for _ in range(3):
        parts[1].policy.controller.observe(0.01, True)
    telemetry.recall(parts)
    assert value("fraudstream_stage1_recall", partition="0") == 0.5
    assert value("fraudstream_stage1_budget", partition="0") == 0.1
    assert value("fraudstream_stage1_recall", partition="1") == 1.0
    assert value("fraudstream_stage1_budget", partition="1") == 0.02  # the floor
    assert value("fraudstream_stage1_recall_target") == 0.9
    assert value("fraudstream_stage1_budget_maximum") == 0.1
    telemetry._recall_at = 0.0  # the next call publishes (at most one a second)
    telemetry.recall({1: parts[1]})  # partition 0 was revoked: it leaves the gauges
    assert REGISTRY.get_sample_value("fraudstream_stage1_recall", {"partition": "0"}) is None


def test_checkpoint_metrics_count_written_and_skipped() -> None:
    before = value("fraudstream_stage1_checkpoints_total", result="written")
    skipped = value("fraudstream_stage1_checkpoints_total", result="skipped")
    m.record_checkpoint(3, 12_345)
    m.record_checkpoint(3, None)
    m.record_checkpoint_snapshot(0.25)
    assert value("fraudstream_stage1_checkpoints_total", result="written") == before + 1
    assert value("fraudstream_stage1_checkpoints_total", result="skipped") == skipped + 1
    assert value("fraudstream_stage1_checkpoint_bytes", partition="3") == 12_345
    assert value("fraudstream_stage1_checkpoint_seconds_total") >= 0.25
