"""``fraudstream demo``: the whole system, end to end, on one machine.

Broker (embedded unless one is configured) → topics → stage-1 and stage-2 workers as child
processes → simulated traffic with delayed labels plus a few malformed messages → a live view
of the decisions topic → a summary. Every transaction must end with exactly one decision.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.demo_watch import DecisionWatcher, live_view
from streams.errors import FraudstreamError
from streams.kafka import clients
from streams.kafka.clients import broker_for
from streams.kafka.embedded import free_port
from streams.kafka.topics import create_topics
from streams.observability import readiness
from streams.process import WorkerProcess
from streams.settings import Settings

MALFORMED: list[bytes] = [
    b"{not json",
    b'{"transaction_id": "bad-1", "card_id": "1"}',
    b'{"transaction_id": "bad-2", "card_id": "1", "terminal_id": "2", "amount": -5, '
    b'"timestamp": 0}',
    b'{"transaction_id": "bad-3", "card_id": "1", "terminal_id": "2", "amount": 10, '
    b'"timestamp": "yesterday"}',
    b"\xff\xfe\x00 not utf-8",
    b'["an", "array"]',
]


def demo_history(transactions: int, seed: int) -> pl.DataFrame:
    customers = 1000
    days = max(10, math.ceil(transactions / (customers * 2) * 1.1))
    df = simulate(
        customers=customers,
        terminals=2000,
        days=days,
        seed=seed,
        compromised_terminals_per_day=1,
        compromised_cards_per_day=1,
    )
    from streams.data.handbook import read_handbook_frame

    return read_handbook_frame(df).head(transactions)


def spawn(stage: str, settings: Settings, log_dir: Path, port: int) -> WorkerProcess:
    return WorkerProcess(
        stage, settings, log_dir, stage, FRAUD_LOG_LEVEL="WARNING", FRAUD_METRICS_PORT=str(port)
    ).start()


def wait_ready(
    ports: dict[str, int],
    procs: list[WorkerProcess],
    timeout_s: float = 90.0,
) -> None:
    """Print each worker's metrics URL, then wait for its /readyz."""
    for stage, port in ports.items():
        print(f"{stage}: metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr)
    readiness.wait_ready(ports, procs, timeout_s)


def run_demo(
    settings: Settings, transactions: int, rate: float | None, seed: int, timeout_s: float = 600.0
) -> dict[str, Any]:
    df = demo_history(transactions, seed)
    log_dir = Path(os.environ.get("FRAUD_DEMO_LOGS", "out/demo"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with broker_for(settings) as s:
        create_topics(s)
        watcher = DecisionWatcher(s)
        ports = {"stage1": free_port(), "stage2": free_port()}
        procs = [spawn(stage, s, log_dir, port) for stage, port in ports.items()]
        try:
            wait_ready(ports, procs)
            started = time.monotonic()
            producer = clients.producer(s)
            for i, value in enumerate(MALFORMED):
                producer.produce(s.topic_transactions, value, f"malformed-{i}".encode())
            producer.flush(10)
            # produced from a thread while decisions are read as they come, so the latency
            # measured is the pipeline's, not the time the whole history takes to send
            failed: list[BaseException] = []

            def send() -> None:
                try:
                    produce_history(df, s, rate=rate)
                except BaseException as exc:  # reported by the loop below
                    failed.append(exc)

            sender = threading.Thread(target=send, name="demo-producer", daemon=True)
            sender.start()
            expected_ids = set(df["TRANSACTION_ID"].cast(pl.Utf8).to_list())
            with live_view(watcher, len(expected_ids), len(MALFORMED)) as refresh:
                while not watcher.complete(expected_ids, len(MALFORMED)):
                    if failed:
                        raise FraudstreamError(f"producing the demo traffic failed: {failed[0]}")
                    for proc in procs:
                        if not proc.alive:
                            raise FraudstreamError(proc.exit_line())
                    if time.monotonic() - started > timeout_s:
                        raise FraudstreamError(
                            f"demo timed out: {len(watcher.decisions)}/{len(expected_ids)} decided"
                        )
                    watcher.poll(0.2)
                    refresh()
            elapsed = time.monotonic() - started
            sender.join(timeout=30)
        finally:
            for proc in procs:
                proc.stop(20)
            watcher.close()
    summary = summarize(df, watcher, elapsed)
    print_summary(summary)
    return summary


def summarize(df: pl.DataFrame, watcher: DecisionWatcher, elapsed: float) -> dict[str, Any]:
    frauds = set(df.filter(pl.col("TX_FRAUD") == 1)["TRANSACTION_ID"].cast(pl.Utf8).to_list())
    decisions = watcher.decisions
    actions = {"approve": 0, "review": 0, "decline": 0}
    flagged = caught = acted = 0
    for tid, d in decisions.items():
        actions[d["action"]] = actions.get(d["action"], 0) + 1
        if d.get("stage") == 2:
            flagged += 1
            if tid in frauds:
                caught += 1
                acted += d["action"] in ("review", "decline")
    lat = np.array(watcher.latencies_ms) if watcher.latencies_ms else np.zeros(1)
    return {
        "transactions": int(df.height),
        "decisions": len(decisions),
        "flagged": flagged,
        "dead_letters": watcher.dead_letters,
        "actions": actions,
        "frauds": len(frauds),
        "frauds_flagged": caught,
        "frauds_declined_or_reviewed": acted,
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
        },
        "throughput_tps": round(df.height / elapsed, 1),
        "duplicate_decisions": watcher.duplicates,
    }


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fraudstream demo summary", show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
