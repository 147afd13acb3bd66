"""The benchmark's record: machine, library versions, ratios, and a readable table."""

from __future__ import annotations

import os
import platform
from typing import Any

from rich.console import Console
from rich.table import Table

TARGETS = {
    "stage1.tps": ("≥ 50,000 tx/s", lambda r: r["stage1"]["tps"] >= 50_000),
    "ratios.stage1_vs_faust": ("≥ 6", lambda r: r["ratios"]["stage1_vs_faust"] >= 6),
    "ratios.stage1_vs_confluent_passthrough": (
        "≥ 0.3",
        lambda r: r["ratios"]["stage1_vs_confluent_passthrough"] >= 0.3,
    ),
    "stage2.tps": ("≥ 5,000 tx/s", lambda r: r["stage2"]["tps"] >= 5_000),
    "latency_ms.stage1_p99": ("≤ 20 ms", lambda r: r["latency_ms"]["stage1_p99"] <= 20),
    "latency_ms.end_to_end_p99": ("≤ 50 ms", lambda r: r["latency_ms"]["end_to_end_p99"] <= 50),
    "memory.bytes_per_card": ("≤ 1,024", lambda r: r["memory"]["bytes_per_card"] <= 1024),
    "checkpoints.ratio": ("≥ 0.9", lambda r: r["checkpoints"]["ratio"] >= 0.9),
    "rules.ratio": ("≥ 0.9", lambda r: bool(r.get("rules")) and r["rules"]["ratio"] >= 0.9),
    "restore.seconds_by_history": (
        "≤ 10 s, flat within 25 %",
        lambda r: (
            bool(r["restore"])
            and max(r["restore"]["seconds_by_history"].values()) <= 10
            and r["restore"]["flat_within"] <= 0.25
        ),
    ),
}


def machine() -> dict[str, Any]:
    import psutil

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def versions(broker_kind: str) -> dict[str, str]:
    import confluent_kafka
    import faust
    import polars
    import river
    import xgboost

    return {
        "python": platform.python_version(),
        "confluent_kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "faust": str(faust.__version__),
        "river": str(river.__version__),
        "xgboost": str(xgboost.__version__),
        "polars": str(polars.__version__),
        "broker": broker_kind,
    }


def ratios(result: dict[str, Any]) -> dict[str, float]:
    s1, s2, peers = result["stage1"]["tps"], result["stage2"]["tps"], result["peers"]
    out = {
        "stage1_vs_faust": round(s1 / peers["faust_passthrough_tps"], 2),
        "stage1_vs_confluent_passthrough": round(s1 / peers["confluent_passthrough_tps"], 3),
        "stage2_vs_faust": round(s2 / peers["faust_passthrough_tps"], 2),
    }
    eos = result["stage2"].get("exactly_once")
    if eos and "tps" in eos:
        out["stage2_exactly_once_vs_faust"] = round(eos["tps"] / peers["faust_passthrough_tps"], 2)
    return out


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, (target, check) in TARGETS.items():
        out[key] = {"target": target, "met": bool(check(result))}
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _exactly_once_rows(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """Stage 2 in Kafka transactions (measured on brokers that have them)."""
    eos = result["stage2"].get("exactly_once")
    if not eos or "tps" not in eos:
        return []
    return [
        ("stage2.exactly_once.tps", eos["tps"]),
        ("ratios.stage2_exactly_once_vs_faust", result["ratios"]["stage2_exactly_once_vs_faust"]),
    ]


def _rules_rows(rules: dict[str, Any]) -> list[tuple[str, Any]]:
    """The shipped rules against the attribute rule set (none when not measured)."""
    if not rules:
        return []
    rows: list[tuple[str, Any]] = []
    for name in ("shipped", "attribute_set"):
        entry = rules[name]
        what = f"{name.replace('_', ' ')} ({entry['rules']} rules, "
        what += f"{entry['rules_on_attributes']} on attributes)"
        rows.append((f"rules: stage1 tps, {what}", entry["tps"]))
    rows.append(("rules.ratio (attribute set / shipped)", rules["ratio"]))
    return rows


def _cpu_rows(latency: dict[str, Any]) -> list[tuple[str, Any]]:
    """The machine's load while the latency was measured: busy share of all cores, and each
    process's share of one core."""
    rows: list[tuple[str, Any]] = []
    for key, what in (("cpu_percent", "latency"), ("broker_floor_cpu_percent", "floor")):
        cpu = latency.get(key)
        if cpu:
            rows.append((f"{what}: machine CPU busy, %", cpu["machine_busy"]))
            parts = [name for name in cpu if name != "machine_busy"]
            rows.append(
                (
                    f"{what}: % of a core, {' / '.join(parts)}",
                    " / ".join(f"{cpu[name]:.0f}" for name in parts),
                )
            )
    return rows


def _restore_rows(restore: dict[str, Any]) -> list[tuple[str, Any]]:
    """The restore step's rows: flatness, seconds and bytes per history, the rebuild's time."""
    rows: list[tuple[str, Any]] = []
    if restore:
        rows.append(("restore.flat_within (max / min - 1)", restore["flat_within"]))
    for history, seconds in restore.get("seconds_by_history", {}).items():
        entry = restore["histories"][history]
        rows.append((f"restore: {history} history ({entry['transactions']:,} tx), s", seconds))
        rows.append(
            (f"restore: {history} checkpoint bytes/card", entry["checkpoint_bytes_per_card"])
        )
        if "stage2" in entry:
            seconds_s2 = entry["stage2"]["seconds_to_first_decision"]
            rows.append((f"restore: stage 2, {history} history, s", seconds_s2))
    if restore.get("without_checkpoints"):
        rebuild = restore["without_checkpoints"]["seconds_to_first_new"]
        rows.append(("restore without checkpoints (1x), s", rebuild))
    return rows


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    met = result.get("targets", {})
    table = Table(title=f"fraudstream bench ({result['transactions']:,} transactions)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    rows = [
        ("peers.confluent_passthrough_tps", result["peers"]["confluent_passthrough_tps"]),
        ("peers.faust_passthrough_tps", result["peers"]["faust_passthrough_tps"]),
        ("stage1.tps", result["stage1"]["tps"]),
        ("stage2.tps", result["stage2"]["tps"]),
        ("ratios.stage1_vs_faust", result["ratios"]["stage1_vs_faust"]),
        (
            "ratios.stage1_vs_confluent_passthrough",
            result["ratios"]["stage1_vs_confluent_passthrough"],
        ),
        ("ratios.stage2_vs_faust", result["ratios"]["stage2_vs_faust"]),
        *_exactly_once_rows(result),
        ("latency_ms.offered_tps", result["latency_ms"]["offered_tps"]),
        ("latency_ms.stage1_p50", result["latency_ms"]["stage1_p50"]),
        ("latency_ms.stage1_p99", result["latency_ms"]["stage1_p99"]),
        ("latency_ms.end_to_end_p50", result["latency_ms"]["end_to_end_p50"]),
        ("latency_ms.end_to_end_p99", result["latency_ms"]["end_to_end_p99"]),
        ("latency_ms.broker_floor_p50", result["latency_ms"].get("broker_floor_p50")),
        ("latency_ms.broker_floor_p99", result["latency_ms"].get("broker_floor_p99")),
        *_cpu_rows(result["latency_ms"]),
        ("memory.cards", result["memory"]["cards"]),
        ("memory.rss_mb", result["memory"]["rss_mb"]),
        ("memory.bytes_per_card", result["memory"]["bytes_per_card"]),
    ]
    checkpoints = result.get("checkpoints", {})
    if checkpoints:
        rows.append(("checkpoints.ratio (every 1 s / off)", checkpoints["ratio"]))
    rows += _rules_rows(result.get("rules") or {})
    restore = result.get("restore") or {}
    rows += _restore_rows(restore)
    met_restore = met.get("restore.seconds_by_history") if restore else None
    for workers, entry in sorted(result.get("scale", {}).get("workers", {}).items()):
        rows.append((f"scale: stage1 tps, {workers} worker(s)", entry["tps"]))
    met_by_row = {
        "checkpoints.ratio (every 1 s / off)": met.get("checkpoints.ratio"),
        "rules.ratio (attribute set / shipped)": met.get("rules.ratio"),
        "restore.flat_within (max / min - 1)": met_restore,
    }
    for key, value in rows:
        target = met.get(key) or met_by_row.get(key)
        mark = ""
        if target is not None:
            mark = f"{target['target']} {'[green]met[/]' if target['met'] else '[red]not met[/]'}"
        table.add_row(key, _fmt(value), mark)
    m = result["machine"]
    table.caption = (
        f"{m['cores']} cores, {m['memory_gb']} GB, {m['cpu_model']}; "
        f"broker {result['versions']['broker']}; load at start {m['load_average_at_start']}"
    )
    console.print(table)
