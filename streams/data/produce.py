"""Publish a handbook-format history: transactions, and labels stamped with their publication time.

Transactions are keyed by card, carry their event time as the record timestamp and a
``sent_ms`` header (wall clock at send, for latency). The label of a transaction at tⱼ is
known at tⱼ + delay (its record timestamp, which is all stage 1 goes by: its label gate holds
a label until the stream reaches that time) and is sent ``LABEL_LEAD_MS`` (6 hours) of event
time before the transactions at that time. Sent just before them, a label raced them: the producer's
batches of two topics reach the broker in either order, and a worker at the head of the stream
could read the transaction, find the labels partition at its end and go on without the label
(late: applied a segment later, decisions different from a replay; seen in CI).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from streams.data.handbook import extra_fields
from streams.kafka import clients
from streams.schema import encode, iso_utc
from streams.settings import Settings

DAY_MS = 86_400_000
LABEL_LEAD_MS = DAY_MS // 4
"""How far ahead of its publication time (in the stream's event time) a label is sent."""
FLUSH_TIMEOUT_S = 60.0
"""How long the end of a run waits for the broker to acknowledge what is still in flight."""


@dataclass
class ProduceStats:
    transactions: int = 0
    labels: int = 0
    frauds: int = 0


def transaction_value(
    tid: str,
    card: str,
    terminal: str,
    amount: float,
    ts_ms: int,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """A transaction's JSON: the five core fields, then the ``extra`` fields (attributes)."""
    value = {
        "transaction_id": tid,
        "card_id": card,
        "terminal_id": terminal,
        "amount": amount,
        "timestamp": iso_utc(ts_ms),
    }
    if extra:
        value.update(extra)
    return encode(value)


def label_value(tid: str, card: str, terminal: str, ts_ms: int, fraud: int, amount: float) -> bytes:
    """A label's JSON: the transaction's ids, time and amount (stage 1's terminal table asks
    who a known fraud points at: its card and its amount) and the verdict."""
    return encode(
        {
            "transaction_id": tid,
            "card_id": card,
            "terminal_id": terminal,
            "timestamp": ts_ms,
            "amount": amount,
            "fraud": fraud,
        }
    )


def produce_history(
    df: pl.DataFrame,
    settings: Settings,
    label_delay_days: float = 7.0,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    flush_labels: bool = False,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
) -> ProduceStats:
    """Publish ``df`` (from ``read_handbook``) in stream order; returns what was sent.

    ``rate`` limits transactions per second (None = as fast as the broker takes them).
    ``flush_labels`` also publishes the labels whose delay has not passed by the end.
    Raises ``BrokerError`` if any record was refused or is still unacknowledged
    ``flush_timeout_s`` after the last was sent: a replay that silently dropped transactions
    would look like a pipeline that lost them.
    """
    sink = clients.CheckedProducer(settings, flush_timeout_s)
    send = sink.send
    s = settings
    tids = df["TRANSACTION_ID"].cast(pl.Utf8).to_list()
    cards = df["CUSTOMER_ID"].cast(pl.Utf8).to_list()
    terms = df["TERMINAL_ID"].cast(pl.Utf8).to_list()
    amounts = df["TX_AMOUNT"].cast(pl.Float64).to_list()
    times = df["ts_ms"].cast(pl.Int64).to_list()
    frauds = df["TX_FRAUD"].cast(pl.Int64).to_list() if "TX_FRAUD" in df.columns else None
    extras = extra_fields(df)
    delay = int(label_delay_days * DAY_MS)
    stats = ProduceStats()
    released = 0
    started = time.monotonic()

    def send_label(j: int) -> None:
        assert frauds is not None
        send(
            s.topic_labels,
            label_value(tids[j], cards[j], terms[j], times[j], frauds[j], amounts[j]),
            tids[j].encode(),
            timestamp=times[j] + delay,
        )
        stats.labels += 1
        stats.frauds += frauds[j]

    for i in range(len(tids)):
        if frauds is not None:
            while released < i and times[released] + delay <= times[i] + LABEL_LEAD_MS:
                send_label(released)
                released += 1
        value = transaction_value(
            tids[i], cards[i], terms[i], amounts[i], times[i], extras[i] if extras else None
        )
        headers: list[tuple[str, str | bytes | None]] = [
            ("sent_ms", str(int(time.time() * 1000)).encode())
        ]
        send(s.topic_transactions, value, cards[i].encode(), timestamp=times[i], headers=headers)
        stats.transactions += 1
        if i & 1023 == 1023:
            sink.poll()
            if progress is not None:
                progress(1024)
        if rate:
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                sink.poll()
                time.sleep(ahead)
    if flush_labels and frauds is not None:
        for j in range(released, len(tids)):
            send_label(j)
    sink.close(f"of {stats.transactions} transactions and {stats.labels} labels sent")
    if progress is not None:
        progress(len(tids) % 1024)
    return stats
