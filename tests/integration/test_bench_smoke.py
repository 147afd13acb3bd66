"""``fraudstream bench`` end to end with a tiny run: the JSON has every key, each a positive
number. No timing thresholds here: the benchmark's figures are for ``make bench``."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

REQUIRED = [
    "peers.confluent_passthrough_tps",
    "peers.faust_passthrough_tps",
    "stage1.tps",
    "stage2.tps",
    "latency_ms.offered_tps",
    "latency_ms.stage1_p50",
    "latency_ms.stage1_p99",
    "latency_ms.end_to_end_p50",
    "latency_ms.end_to_end_p99",
    "latency_ms.broker_floor_p50",
    "latency_ms.broker_floor_p99",
    "latency_ms.cpu_percent.machine_busy",
    "latency_ms.cpu_percent.stage1",
    "latency_ms.cpu_percent.sender",
    "latency_ms.broker_floor_cpu_percent.passthrough",
    "memory.cards",
    "memory.rss_mb",
    "memory.bytes_per_card",
    "ratios.stage1_vs_faust",
    "ratios.stage1_vs_confluent_passthrough",
    "ratios.stage2_vs_faust",
    "checkpoints.ratio",
    "rules.ratio",
    "rules.shipped.tps",
    "rules.attribute_set.tps",
    "restore.seconds_by_history.1x",
    "restore.histories.1x.recovery_seconds",
    "restore.histories.1x.checkpoint_bytes_per_card",
    "restore.without_checkpoints.seconds_to_first_new",
]


def lookup(record: dict, dotted: str) -> object:
    value: object = record
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"missing {dotted}"
        value = value[part]
    return value


def test_tiny_bench_writes_every_key(kafka_broker, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    repo = Path(__file__).resolve().parents[2]
    cmd = [
        sys.executable, "-m", "streams", "bench",
        "--transactions", "3000",
        "--memory-cards", "5000",
        "--offered-tps", "1000",
        "--latency-seconds", "2",
        "--restore-days", "3",
        "--restore-multiples", "1",
        "--repeats", "2",  # the median of two: the code path of repeated runs, not their time
        "--json", str(out),
        "--logs", str(tmp_path / "logs"),
        "--bootstrap", kafka_broker.bootstrap,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, timeout=400)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert b"stage1.tps" in done.stdout  # the table
    record = orjson.loads(out.read_bytes())
    for key in REQUIRED:
        value = lookup(record, key)
        assert isinstance(value, int | float) and not isinstance(value, bool), key
    # the repeated measurements, and the median run among them as the headline
    for runs, median in (
        (record["stage1"]["runs_tps"], record["stage1"]["tps"]),
        (
            record["peers"]["confluent_passthrough"]["runs_tps"],
            record["peers"]["confluent_passthrough_tps"],
        ),
        (
            record["peers"]["faust_passthrough"]["runs_tps"],
            record["peers"]["faust_passthrough_tps"],
        ),
        (record["stage2"]["runs_tps"], record["stage2"]["tps"]),
    ):
        assert len(runs) == 2 and median in [round(r, 1) for r in runs]
        assert math.isfinite(value) and value > 0, f"{key} = {value}"
    if kafka_broker.kind != "embedded":  # stage 2 in Kafka transactions, on Apache Kafka
        for key in ("stage2.exactly_once.tps", "ratios.stage2_exactly_once_vs_faust"):
            value = lookup(record, key)
            assert isinstance(value, float | int) and value > 0, key
    assert record["memory"]["cards"] == 5000
    assert record["rules"]["attribute_set"]["rules_on_attributes"] >= 10
    assert record["rules"]["attribute_set"]["rules"] > record["rules"]["shipped"]["rules"]
    assert set(record["scale"]["workers"]) == {"1", "2"}
    for key in ("cores", "memory_gb", "cpu_model"):
        assert record["machine"][key]
    for key in ("python", "confluent_kafka", "librdkafka", "faust", "river", "xgboost", "polars"):
        assert record["versions"][key]
    assert record["versions"]["broker"]
