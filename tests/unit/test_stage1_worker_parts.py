"""The stage-1 worker's parts without a broker: output bytes, poll splitting, when offsets are
stored (at-least-once), collector tuning."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.errors import BrokerError, MessageError, TransactionAbortable
from streams.gc_tuning import THRESHOLDS, tuned_gc
from streams.rules.loader import load_rules
from streams.schema import encode
from streams.settings import load_settings
from streams.stage1.batch import split
from streams.stage1.broker_watch import BrokerWatch
from streams.stage1.delivery import AtLeastOnce, DoneBatch, ExactlyOnce
from streams.stage1.history import frame_transactions
from streams.stage1.outputs import emit, encode_outputs, sent_ms_header
from streams.stage1.screen import Screener
from streams.stage1.stats import Stage1Stats

RULES = Path(__file__).resolve().parents[2] / "rules"
SETTINGS = load_settings(bootstrap_servers="127.0.0.1:1", rules_dir=RULES)


def _screened(key: str | None = None, n: int = 3000):
    settings = SETTINGS.model_copy(update={"pseudonymize_key": key}) if key else SETTINGS
    df = read_handbook_frame(
        simulate(customers=200, terminals=400, days=20, seed=5, compromised_cards_per_day=2)
    )
    txs = frame_transactions(df.sort("ts_ms"))[:n]
    screener = Screener.from_settings(settings, load_rules(RULES))
    outs = [screener.screen(txs[i : i + 700]) for i in range(0, len(txs), 700)]
    assert sum(int(o.flagged.sum()) for o in outs) > 0, "the sample should flag some"
    return outs


@pytest.mark.parametrize("key", [None, "secret-key"])
def test_encoded_outputs_equal_the_row_wise_records(key):
    for out in _screened(key):
        expected = [
            encode(out.flagged_record(i) if flagged else out.decision(i))
            for i, flagged in enumerate(out.flagged.tolist())
        ]
        assert encode_outputs(out) == expected


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes | None, headers: Any = None):
        self._p, self._o, self._v, self._h = partition, offset, value, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "tx"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> Any:
        return self._h


def test_sent_ms_header_bytes():
    assert sent_ms_header(FakeMessage(0, 0, b"", [("a", b"1"), ("sent_ms", b"1700")])) == b"1700"
    assert sent_ms_header(FakeMessage(0, 0, b"", None)) is None
    assert sent_ms_header(FakeMessage(0, 0, b"", [("sent_ms", None)])) is None
    assert sent_ms_header(FakeMessage(0, 0, b"", [("sent_ms", b"\xff1")])) == "\ufffd1".encode()


def test_emit_produces_one_keyed_record_per_row():
    out = _screened(n=1400)[1]  # the model forwards once it has 1,000 scores to rank against
    produced: list[tuple[Any, ...]] = []

    def produce(topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        produced.append((topic, value, key, kw["timestamp"], kw["headers"]))

    sources = [FakeMessage(0, i, b"", [("sent_ms", str(1000 + i).encode())]) for i in range(700)]
    sent: list[int] = []
    emit(SETTINGS, produce, out, sources, sent)
    assert len(produced) == 700
    for i, (topic, value, key, ts, headers) in enumerate(produced):
        tx = out.txs[i]
        assert ts == tx.ts_ms and headers == [("sent_ms", str(1000 + i).encode())]
        if out.flagged[i]:
            assert (topic, key) == (SETTINGS.topic_flagged, tx.card_id.encode())
        else:
            assert (topic, key) == (SETTINGS.topic_decisions, tx.transaction_id.encode())
            assert orjson.loads(value)["action"] == "approve"
    assert sent == [1000 + i for i in range(700) if not out.flagged[i]]


@pytest.mark.parametrize(
    "code, abortable", [(KafkaError._STATE, True), (KafkaError.TOPIC_AUTHORIZATION_FAILED, False)]
)
def test_emit_tells_a_failed_transaction_from_a_refused_topic(code: int, abortable: bool):
    """A produce refused because the producer's transaction already failed (seen in a kill test
    on Apache Kafka: a sequence gap after a rebalance) must abort and rewind the batch under
    exactly-once, not stop the worker; a topic it may not write stops it."""
    out = _screened(n=1400)[1]

    def produce(*args: Any, **kw: Any) -> None:
        raise KafkaException(KafkaError(code))

    sources = [FakeMessage(0, i, b"", None) for i in range(700)]
    with pytest.raises(BrokerError, match="not delivered") as raised:
        emit(SETTINGS, produce, out, sources, [])
    assert isinstance(raised.value, TransactionAbortable) is abortable


def test_an_aborted_transaction_rewinds_the_batch():
    aborted: list[float] = []
    rewound: list[list[TopicPartition]] = []

    class Producer:
        def abort_transaction(self, timeout: float) -> None:
            aborted.append(timeout)

    watch = BrokerWatch(SETTINGS, Stage1Stats(), threading.Event())
    delivery = ExactlyOnce(Producer(), None, watch, lambda b: None, rewound.append)
    delivery.in_transaction = True
    offsets = [TopicPartition("tx", 0, 7), TopicPartition("tx", 1, 3)]
    delivery.abort(offsets, "Erroneous state")
    assert aborted == [30] and rewound == [offsets] and not delivery.in_transaction


def test_split_groups_by_partition_and_dead_letters_bad_messages():
    good = (
        b'{"transaction_id":"t%d","card_id":"c","terminal_id":"x","amount":1.0,'
        b'"timestamp":"2018-04-01T00:00:31.000Z"}'
    )
    msgs = [
        FakeMessage(0, 10, good % 1),
        FakeMessage(1, 5, b"not json"),
        FakeMessage(1, 6, good % 2),
        FakeMessage(2, 7, good % 3),  # not owned
        FakeMessage(0, 11, good % 4),
    ]
    dead: list[tuple[int, MessageError]] = []
    firsts: list[bool] = []
    polled = split(
        msgs, {0, 1}, lambda m, e: dead.append((m.offset(), e)), lambda: firsts.append(True)
    )
    assert firsts == [True]
    assert {p: [t.transaction_id for t in g[0]] for p, g in polled.groups.items()} == {
        0: ["t1", "t4"],
        1: ["t2"],
    }
    assert [o for o, _ in dead] == [5]
    assert sorted((tp.partition, tp.offset) for tp in polled.offsets()) == [(0, 12), (1, 7)]


class FakeProducer:
    def __init__(self) -> None:
        self.outstanding = 0
        self.fail_next_flush: KafkaError | None = None
        self.on_delivery: Any = None

    def flush(self, timeout: float = -1) -> int:
        if self.fail_next_flush is not None and self.on_delivery is not None:
            self.on_delivery(self.fail_next_flush, FakeMessage(0, 0, b""))
            self.fail_next_flush = None
        self.outstanding = 0
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.stored: list[tuple[int, int]] = []
        self.commits = 0

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored += [(tp.partition, tp.offset) for tp in offsets]

    def commit(self, asynchronous: bool = True) -> None:
        self.commits += 1


def _done(partition: int, offset: int) -> DoneBatch:
    return DoneBatch([TopicPartition("tx", partition, offset)], 1, [], [], 0.0)


def test_offsets_are_stored_only_when_the_outputs_are_flushed():
    producer, consumer = FakeProducer(), FakeConsumer()
    finished: list[DoneBatch] = []
    owned = {0, 1}
    delivery = AtLeastOnce(producer, consumer, threading.Event(), finished.append, lambda: owned)
    producer.on_delivery = delivery.on_failure
    delivery.done(_done(0, 5))
    assert consumer.stored == [] and finished == []  # outputs in flight
    delivery.settle()
    assert consumer.stored == [(0, 5)] and len(finished) == 1
    delivery.settle()  # nothing pending: nothing more
    assert consumer.stored == [(0, 5)]
    owned.discard(1)
    delivery.done(_done(1, 9))  # partition lost meanwhile: its offset is not stored
    delivery.hand_over()
    assert consumer.stored == [(0, 5)] and consumer.commits == 1 and len(finished) == 2


def test_a_failed_output_stops_before_its_offsets_are_stored():
    producer, consumer = FakeProducer(), FakeConsumer()
    delivery = AtLeastOnce(producer, consumer, threading.Event(), lambda b: None, lambda: {0})
    producer.on_delivery = delivery.on_failure
    producer.fail_next_flush = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    delivery.done(_done(0, 3))
    with pytest.raises(BrokerError, match="not delivered"):
        delivery.settle()
    delivery.close()  # the worker's shutdown after the error
    assert consumer.stored == []


def test_close_delivers_stores_and_commits():
    producer, consumer = FakeProducer(), FakeConsumer()
    delivery = AtLeastOnce(producer, consumer, threading.Event(), lambda b: None, lambda: {0})
    delivery.done(_done(0, 8))
    delivery.close()
    assert consumer.stored == [(0, 8)] and consumer.commits == 1


def test_tuned_gc_restores_the_collector():
    before = gc.get_threshold()
    with tuned_gc() as tuned:
        assert tuned and gc.get_threshold() == THRESHOLDS and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    result: list[bool] = []

    def in_thread() -> None:
        with tuned_gc() as tuned:
            result.append(tuned and gc.get_threshold() != before)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert result == [False]  # a worker in a thread leaves the program's collector alone


def test_screen_outputs_are_arrays_of_the_batch_length():
    out = _screened(n=1400)[1]  # the model forwards once it has 1,000 scores to rank against
    assert isinstance(out.flagged, np.ndarray) and len(encode_outputs(out)) == len(out.txs)
