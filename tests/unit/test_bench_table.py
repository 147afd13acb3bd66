"""The bench's printed table: every measured step gets its row, targets are marked met / not met."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from streams.bench.report import print_table


def _result(restore: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "transactions": 200_000,
        "peers": {"confluent_passthrough_tps": 126510.4, "faust_passthrough_tps": 3494.2},
        "stage1": {"tps": 22687.0},
        "stage2": {"tps": 2987.0, "exactly_once": {"tps": 2236.0}},
        "ratios": {
            "stage1_vs_faust": 6.49,
            "stage1_vs_confluent_passthrough": 0.18,
            "stage2_vs_faust": 0.85,
            "stage2_exactly_once_vs_faust": 0.64,
        },
        "latency_ms": {
            "offered_tps": 5000,
            "stage1_p50": 71.0,
            "stage1_p99": 317.0,
            "end_to_end_p50": 103.0,
            "end_to_end_p99": 436.0,
            "broker_floor_p50": 24.0,
            "broker_floor_p99": 43.0,
            "cpu_percent": {"machine_busy": 95.0, "stage1": 52.0, "broker": 70.0},
        },
        "memory": {"cards": 5000, "rss_mb": 310.5, "bytes_per_card": 1010},
        "checkpoints": {"ratio": 0.82},
        "rules": {
            "shipped": {"rules": 13, "rules_on_attributes": 0, "tps": 24000.0},
            "attribute_set": {"rules": 22, "rules_on_attributes": 9, "tps": 22080.0},
            "ratio": 0.92,
        },
        "scale": {"workers": {"1": {"tps": 22687.0}, "2": {"tps": 31955.0}}},
        "targets": {
            "ratios.stage1_vs_confluent_passthrough": {"target": ">= 0.35", "met": False},
            "ratios.stage2_vs_faust": {"target": ">= 0.6", "met": True},
            "restore.seconds_by_history": {"target": "flat within 0.5", "met": True},
        },
        "machine": {
            "cores": 2,
            "memory_gb": 23.6,
            "cpu_model": "Intel Xeon",
            "load_average_at_start": 0.4,
        },
        "versions": {"broker": "Apache Kafka 4.1.1"},
    }
    if restore:
        out["restore"] = {
            "flat_within": 0.12,
            "seconds_by_history": {"7d": 1.5, "28d": 1.6},
            "histories": {
                "7d": {"transactions": 100_000, "checkpoint_bytes_per_card": 400},
                "28d": {
                    "transactions": 400_000,
                    "checkpoint_bytes_per_card": 410,
                    "stage2": {"seconds_to_first_decision": 2.5},
                },
            },
            "without_checkpoints": {"seconds_to_first_new": 9.0},
        }
    return out


def _printed(result: dict[str, Any]) -> str:
    console = Console(width=200, record=True, color_system=None)
    print_table(result, console)
    return console.export_text()


def test_every_step_has_its_row_and_targets_are_marked() -> None:
    text = _printed(_result())
    for row in (
        "peers.confluent_passthrough_tps",
        "stage2.exactly_once.tps",
        "latency_ms.broker_floor_p99",
        "latency: % of a core, stage1 / broker",
        "checkpoints.ratio (every 1 s / off)",
        "rules: stage1 tps, attribute set (22 rules, 9 on attributes)",
        "restore: 28d history (400,000 tx), s",
        "restore: stage 2, 28d history, s",
        "restore without checkpoints (1x), s",
        "scale: stage1 tps, 2 worker(s)",
    ):
        assert row in text, row
    line = next(ln for ln in text.splitlines() if "stage1_vs_confluent_passthrough" in ln)
    assert ">= 0.35 not met" in line
    line = next(ln for ln in text.splitlines() if "restore.flat_within" in ln)
    assert "flat within 0.5 met" in line
    assert "2 cores, 23.6 GB, Intel Xeon; broker Apache Kafka 4.1.1" in text


def test_steps_not_measured_have_no_rows() -> None:
    result = _result(restore=False)
    del result["rules"], result["checkpoints"], result["stage2"]["exactly_once"]
    text = _printed(result)
    assert "restore" not in text
    assert "rules" not in text and "checkpoints" not in text
    assert "exactly_once" not in text
    assert "stage1.tps" in text
