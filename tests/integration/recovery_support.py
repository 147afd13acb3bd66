"""Shared pieces of the recovery tests (no tests here): traffic, worker processes, topic tails,
and the reference decisions of an uninterrupted run."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import polars as pl

from streams.crashtest import tail as crashtest_tail
from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.process import WorkerProcess
from streams.recovery.replay import Replayer
from streams.settings import Settings
from tests.support import Broker, isolated_settings

REPLAY_FIELDS = ("replay_id", "supersedes")


def recovery_settings(broker: Broker, **overrides: Any) -> Settings:
    """``isolated_settings``; on the embedded broker with a 3 s session timeout (Kafka's
    minimum is 6 s), which halves the waits for group joins and for a killed member's eviction:
    these tests join and kill a lot, and their subject is correctness, not timing."""
    if broker.kind == "embedded":
        overrides.setdefault("session_timeout_ms", 3000)
    return isolated_settings(broker.bootstrap, **overrides)


def history(
    customers: int = 500, days: int = 20, seed: int = 3, labels: bool = False
) -> pl.DataFrame:
    """About 40 transactions per customer-day... ~19k for the defaults. Without ``labels`` no
    labels column, so ``produce_history`` publishes no labels; with it, the labels flow beside
    the transactions."""
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
    return df if labels else df.drop("TX_FRAUD")


def ids(df: pl.DataFrame) -> set[str]:
    return set(df["TRANSACTION_ID"].cast(pl.Utf8).to_list())


class Tail(crashtest_tail.Tail):
    """The crash-test tail (every record of some topics, from their beginning), with the
    report these tests print when a transaction ends without a decision."""

    def decided(self, topic: str) -> set[str]:
        return self.ids(topic)

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


Worker = WorkerProcess
"""``python -m streams <stage>`` with the settings as FRAUD_* variables, log to a file."""
