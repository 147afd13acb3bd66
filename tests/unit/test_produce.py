"""``produce_history``: what it sends, in which order, and that a lost record is an error.

The producer is faked at the ``clients.producer`` seam; the integration tests send real
histories through the broker.
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import pytest

from streams.data import produce
from streams.errors import BrokerError
from streams.settings import Settings

DAY = produce.DAY_MS


class FakeError:
    def __init__(self, text: str):
        self.text = text

    def str(self) -> str:
        return self.text


class FakeMessage:
    def __init__(self, topic: str):
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeProducer:
    """Keeps what is produced; ``flush`` reports ``refuse`` failures and leaves ``stuck``."""

    def __init__(self, conf: dict[str, Any], refuse: int = 0, stuck: int = 0):
        self.on_delivery = conf["on_delivery"]
        self.conf = conf
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.refuse, self.stuck = refuse, stuck

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        self.sent.append((topic, key, value, kw["timestamp"]))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for topic, *_ in self.sent[: self.refuse]:
            self.on_delivery(FakeError("Broker: Message size too large"), FakeMessage(topic))
        return self.stuck


def _history(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "TRANSACTION_ID": list(range(n)),
            "CUSTOMER_ID": [i % 2 for i in range(n)],
            "TERMINAL_ID": [10 + i for i in range(n)],
            "TX_AMOUNT": [12.5 * (i + 1) for i in range(n)],
            "ts_ms": [i * 2 * DAY for i in range(n)],  # one every two days
            "TX_FRAUD": [1 if i == 0 else 0 for i in range(n)],
        }
    )


def _run(monkeypatch, history: pl.DataFrame | None = None, **fake: int) -> tuple[FakeProducer, Any]:
    """``produce_history`` of ``history`` (default ``_history()``) into a fake producer."""
    made: list[FakeProducer] = []

    def producer(settings: Settings, **conf: Any) -> FakeProducer:
        made.append(FakeProducer(conf, **fake))
        return made[-1]

    monkeypatch.setattr(produce.clients, "producer", producer)
    history = _history() if history is None else history
    stats = produce.produce_history(history, Settings(), label_delay_days=7)
    return made[0], stats


def test_transactions_in_order_labels_only_after_their_delay(monkeypatch):
    fake, stats = _run(monkeypatch)
    s = Settings()
    assert (stats.transactions, stats.labels, stats.frauds) == (6, 2, 1)
    assert fake.conf["delivery.report.only.error"] is True
    order = [(t, orjson.loads(v)["transaction_id"]) for t, _, v, _ in fake.sent]
    # the label of tx 0 (day 0) is due at day 7: sent before tx 4 (day 8), after tx 3 (day 6)
    assert order.index((s.topic_labels, "0")) == order.index((s.topic_transactions, "4")) - 1
    label_ts = [ts for t, _, _, ts in fake.sent if t == s.topic_labels]
    assert label_ts == [0 + 7 * DAY, 2 * DAY + 7 * DAY]
    assert [k for t, k, _, _ in fake.sent if t == s.topic_transactions] == [b"0", b"1"] * 3


def test_a_label_goes_out_ahead_of_the_transactions_at_its_publication_time(monkeypatch):
    hour = DAY // 24
    # the label of tx 0 is known at day 7; tx 1 comes 3 hours before that, tx 2 a day later
    history = _history(3).with_columns(pl.Series("ts_ms", [0, 7 * DAY - 3 * hour, 8 * DAY]))
    fake, _ = _run(monkeypatch, history)
    s = Settings()
    order = [(t, orjson.loads(v)["transaction_id"], ts) for t, _, v, ts in fake.sent]
    assert order[:3] == [
        (s.topic_transactions, "0", 0),
        (s.topic_labels, "0", 7 * DAY),  # sent ahead (produce.LABEL_LEAD_MS), stamped day 7
        (s.topic_transactions, "1", 7 * DAY - 3 * hour),
    ]
    assert 6 * hour == produce.LABEL_LEAD_MS


def test_a_refused_record_is_an_error_not_a_silent_gap(monkeypatch):
    with pytest.raises(BrokerError, match=r"1 records refused .* Message size too large"):
        _run(monkeypatch, refuse=1)


def test_records_still_unacknowledged_at_the_end_are_an_error(monkeypatch):
    with pytest.raises(BrokerError, match=r"0 records refused by the broker and 3 unacknowledged"):
        _run(monkeypatch, stuck=3)


def test_extra_attribute_columns_become_the_transactions_extra_fields(monkeypatch):
    history = _history(3).with_columns(
        pl.Series("card_country", ["FR", None, "DE"]),
        pl.Series("Unnamed: 0", [7, 8, 9]),  # not named like an attribute: left out
    )
    fake, _ = _run(monkeypatch, history)
    values = [orjson.loads(v) for t, _, v, _ in fake.sent if t == Settings().topic_transactions]
    assert [v.get("card_country") for v in values] == ["FR", None, "DE"]
    assert "card_country" not in values[1] and all("Unnamed: 0" not in v for v in values)
    assert list(values[0])[:5] == [
        "transaction_id",
        "card_id",
        "terminal_id",
        "amount",
        "timestamp",
    ]
