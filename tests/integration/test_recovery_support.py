"""Shared pieces of the recovery tests (no tests here): traffic, worker processes, topic tails,
and the reference decisions of an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.kafka import clients
from streams.recovery.replay import Replayer
from streams.settings import Settings
from tests.conftest import Broker, isolated_settings, settings_env

REPLAY_FIELDS = ("replay_id", "supersedes")


def recovery_settings(broker: Broker, **overrides: Any) -> Settings:
    """``isolated_settings``; on the embedded broker with a 3 s session timeout (Kafka's
    minimum is 6 s), which halves the waits for group joins and for a killed member's eviction:
    these tests join and kill a lot, and their subject is correctness, not timing."""
    if broker.kind == "embedded":
        overrides.setdefault("session_timeout_ms", 3000)
    return isolated_settings(broker.bootstrap, **overrides)


def history(customers: int = 500, days: int = 20, seed: int = 3) -> pl.DataFrame:
    """About 40 transactions per customer-day... ~19k for the defaults; no labels column, so
    ``produce_history`` publishes no labels (see the determinism note in the worker)."""
    df = read_handbook_frame(
        simulate(
            customers=customers,
            terminals=customers * 2,
            days=days,
            seed=seed,
            compromised_terminals_per_day=1,
            compromised_cards_per_day=1,
        )
    )
    return df.drop("TX_FRAUD")


def ids(df: pl.DataFrame) -> set[str]:
    return set(df["TRANSACTION_ID"].cast(pl.Utf8).to_list())


class Tail:
    """A thread reading topics from the beginning, keeping every message (key, value, headers)."""

    def __init__(self, settings: Settings, topics: list[str], isolation: str = "read_committed"):
        self.settings = settings
        self.topics = topics
        self.isolation = isolation
        self.messages: dict[str, list[Any]] = {t: [] for t in topics}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Tail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = clients.consumer(
            self.settings,
            "tail",
            **{"enable.auto.commit": False, "isolation.level": self.isolation},
        )
        assignment = []
        for topic in self.topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        consumer.assign(assignment)
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=5000, timeout=0.2)
                good = [(m.topic(), m.key(), m.value(), m.headers()) for m in msgs if not m.error()]
                if good:
                    with self.lock:
                        for topic, key, value, headers in good:
                            self.messages[topic].append((key, value, headers))
        finally:
            consumer.close()

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.messages[topic])

    def stage1_outputs(self, settings: Settings) -> int:
        """Flagged records plus stage-1 decisions seen so far."""
        with self.lock:
            flagged = len(self.messages.get(settings.topic_flagged, []))
            decisions = self.messages.get(settings.topic_decisions, [])
            return flagged + sum(1 for _, v, _ in decisions if b'"stage":1,' in v)

    def values(self, topic: str) -> list[bytes]:
        with self.lock:
            return [v for _, v, _ in self.messages[topic]]

    def decided(self, topic: str) -> set[str]:
        return {str(orjson.loads(v)["transaction_id"]) for v in self.values(topic)}

    def where_undecided(self, missing: set[str], settings: Settings, *workers: Worker) -> str:
        """A failure message: of the undecided transactions, how many are on the transactions
        topic and how many reached the flagged topic (so stage 2 lost them), for the topics
        this tail reads, with the workers' logs."""
        lines = [f"{len(missing)} undecided, e.g. {sorted(missing)[:5]}"]
        for topic in (settings.topic_transactions, settings.topic_flagged):
            if topic in self.messages:
                on_topic = sorted(missing & self.decided(topic))
                lines.append(f"on {topic}: {len(on_topic)} {on_topic[:5]}")
        lines += [f"{w.stage} log:\n{w.log()[-3000:]}" for w in workers]
        return "\n".join(lines)

    def wait_decided(self, topic: str, expected: set[str], timeout_s: float) -> set[str]:
        """Wait until every expected id has a decision; returns the ids still missing."""
        deadline = time.monotonic() + timeout_s
        missing = set(expected)
        seen = 0
        while time.monotonic() < deadline:
            values = self.values(topic)
            for v in values[seen:]:
                missing.discard(str(orjson.loads(v)["transaction_id"]))
            seen = len(values)
            if not missing:
                break
            time.sleep(0.3)
        return missing


def by_transaction(values: list[bytes]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for v in values:
        out.setdefault(str(orjson.loads(v)["transaction_id"]), []).append(v)
    return out


def reference(settings: Settings, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The decisions of one uninterrupted in-process run of both stages over the whole topic
    (the replay engine without a range), by transaction id."""
    out: dict[str, dict[str, Any]] = {}

    def sink(decision: dict[str, Any], ts_ms: int) -> None:
        for name in REPLAY_FIELDS:
            decision.pop(name, None)
        out[str(decision["transaction_id"])] = decision

    Replayer(settings, settings.topic_transactions, None, None, **kwargs).run(sink)
    return out


@contextlib.contextmanager
def traffic(settings: Settings, df: pl.DataFrame, rate: float | None) -> Iterator[threading.Thread]:
    """Publish ``df`` in the background (``rate`` transactions/s); a record the broker did not
    take fails the test when the block ends."""
    failed: list[BaseException] = []

    def send() -> None:
        try:
            produce_history(df, settings, rate=rate)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(120)
    if failed:
        raise AssertionError(f"the traffic was not all delivered: {failed[0]}")


class Worker:
    """``python -m streams <stage>`` with the settings as FRAUD_* variables, log to a file."""

    def __init__(self, stage: str, settings: Settings, log_dir: Path, **env: str):
        self.stage = stage
        self.env = {**settings_env(settings), "FRAUD_LOG_LEVEL": "INFO", **env}
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Worker:
        self.starts += 1
        log = (self.log_dir / f"{self.stage}-{os.getpid()}-{id(self)}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", self.stage],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.log_path = Path(log.name)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def wait_log(self, text: str, timeout_s: float = 60) -> None:
        """Wait until the worker's log contains ``text`` (it is running, not starting)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in log:\n{self.log()[-3000:]}"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.proc else ""

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
