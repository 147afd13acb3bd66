"""A poisoned stream mixed into good traffic: every bad message in a dead-letter topic with the
right error kind and its original bytes, every good transaction decided exactly once; ``dlq
inspect`` reports them. Stage 2 meanwhile fails every first scoring attempt (the
FRAUD_FAULT_INJECT test hook): the flagged records go through the first retry topic and are
decided there, as an uninterrupted run decides them."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.data.produce import produce_history
from streams.kafka import clients
from streams.kafka.dlq import header_dict
from streams.kafka.topics import create_topics, retry_topic
from streams.process import worker_env
from streams.stage1.dead_letters import DLQ_VALUE_LIMIT
from streams.stage1.state import MAX_TRANSACTION_BYTES
from tests.integration.helpers import read_topic, stage1_thread
from tests.integration.recovery_support import (
    Tail,
    Worker,
    by_transaction,
    history,
    ids,
    recovery_settings,
    reference,
)

pytestmark = pytest.mark.integration


def _tx(**fields: object) -> bytes:
    base: dict[str, object] = {
        "transaction_id": "p",
        "card_id": "1",
        "terminal_id": "2",
        "amount": 10.0,
        "timestamp": "2018-04-05T10:00:00",
    }
    base.update(fields)
    return orjson.dumps(base)


# value -> expected stage-1 error kind
STAGE1_POISON: dict[bytes | None, str] = {
    b"{not json": "decode",
    b'{"transaction_id": "p0", "card_id": "1"': "decode",  # truncated
    b"": "decode",
    None: "decode",  # tombstone
    b"\xff\xfe not utf-8": "decode",
    b'{"transaction_id": "\xc3\x28", "card_id": "1"}': "decode",  # invalid UTF-8 in a string
    b'{"transaction_id": "p1", "card_id": "1", "terminal_id": "2", "amount": NaN, '
    b'"timestamp": 0}': "decode",
    b'{"transaction_id": "p2", "card_id": "1", "terminal_id": "2", "amount": 1e999, '
    b'"timestamp": 0}': "decode",
    b"[1, 2, 3]": "validation",
    b'"a string"': "validation",
    b"null": "validation",
    b'{"transaction_id": "p3", "card_id": "1"}': "validation",  # missing fields
    _tx(transaction_id="p4", amount="12.5"): "validation",  # wrong types
    _tx(transaction_id="p5", card_id=[1]): "validation",
    _tx(transaction_id=True): "validation",
    _tx(transaction_id="p6", amount="NaN"): "validation",
    _tx(transaction_id="p7", amount=1e12): "validation",  # huge
    _tx(transaction_id="p8", amount=-5): "validation",  # negative
    _tx(transaction_id="p9", timestamp="yesterday"): "validation",  # bad timestamps
    _tx(transaction_id="p10", timestamp=-1): "validation",
    _tx(transaction_id="p11", timestamp="9999-01-01T00:00:00"): "validation",
    _tx(transaction_id="p12", timestamp={"at": 1}): "validation",
    _tx(transaction_id="p13", pad="x" * (MAX_TRANSACTION_BYTES + 1)): "too_large",
}

# flagged-topic value -> expected stage-2 error kind
STAGE2_POISON: dict[bytes, str] = {
    b"{broken": "decode",
    b'{"transaction_id": "s1", "card_id": "9"}': "decode",  # no features: not a flagged record
    orjson.dumps({"transaction_id": "s2", "card_id": "9", "ts_ms": 0, "features": {}}): (
        "validation"
    ),
}


def _produce_5mb(settings) -> tuple[str, bytes | None]:
    """A 5 MB message: refused by the default producer (librdkafka message.max.bytes, 1 MB);
    with the producer limit raised, the broker decides. Returns (outcome, value sent)."""
    big = _tx(transaction_id="p-5mb", pad="y" * (5 * 1024 * 1024))
    default = clients.producer(settings)
    with pytest.raises(KafkaException) as refused:
        default.produce(settings.topic_transactions, big, b"1")
    assert refused.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    raised = clients.producer(settings, **{"message.max.bytes": 8 * 1024 * 1024})
    errors: list[KafkaError] = []
    raised.produce(
        settings.topic_transactions,
        big,
        b"1",
        on_delivery=lambda err, msg: errors.append(err) if err else None,
    )
    raised.flush(30)
    if errors:  # Apache Kafka's default message.max.bytes is ~1 MB: the broker refuses it
        assert errors[0].code() in (
            KafkaError.MSG_SIZE_TOO_LARGE,
            KafkaError.INVALID_RECORD,
        ), errors[0].str()
        return f"broker refused: {errors[0].str()}", None
    return "broker accepted", big


def decided_by_tid(tail: Tail, settings) -> dict[str, list[bytes]]:
    return by_transaction(tail.values(settings.topic_decisions))


@pytest.mark.timeout(180)
def test_poisoned_stream(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(kafka_broker, partitions=2)
    create_topics(settings)
    df = history(customers=120, days=15, seed=41)
    half = df.height // 2
    producer = clients.producer(settings)

    produce_history(df.head(half), settings)
    for i, value in enumerate(STAGE1_POISON):
        producer.produce(settings.topic_transactions, value, str(i % 7).encode())
    producer.flush(10)
    outcome, big = _produce_5mb(settings)
    produce_history(df.tail(df.height - half), settings)
    expected_dead = dict(STAGE1_POISON)
    if big is not None:
        expected_dead[big] = "too_large"

    # stage 2 also fails every first scoring attempt (test hook): all goes through retry.1
    fault = {"FRAUD_FAULT_INJECT": "stage2-transient:1"}
    with Tail(settings, [settings.topic_decisions]) as tail:
        with stage1_thread(settings) as worker, Worker("stage2", settings, tmp_path, **fault):
            for value in STAGE2_POISON:
                producer.produce(settings.topic_flagged, value, b"9")
            producer.flush(10)
            missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=120)
            assert not missing, f"{len(missing)} good transactions undecided"
            dead1 = read_topic(settings, settings.topic_dlq, len(expected_dead), 30, idle_s=1)
            dead2 = read_topic(settings, settings.topic_flagged_dlq, len(STAGE2_POISON), 60, 1)
        decided = tail.decided(settings.topic_decisions)
    assert worker.stats.dead_letters == len(expected_dead)
    assert decided == ids(df), "a bad message was decided, or a good one was not"

    got1 = {m.value(): header_dict(m.headers()) for m in dead1}
    assert len(dead1) == len(expected_dead)
    for value, kind in STAGE1_POISON.items():
        if value is not None and len(value) > DLQ_VALUE_LIMIT:
            continue
        assert value in got1, f"missing dead letter {value!r:.80}"  # byte for byte
        assert got1[value]["dlq.error.kind"] == kind, (value[:80] if value else value, got1[value])
        assert got1[value]["dlq.stage"] == "stage1"
        assert got1[value]["dlq.source.topic"] == settings.topic_transactions
    if big is not None:  # cut to fit a real broker's 1 MB limit, with the original's size and hash
        cut = [h for v, h in got1.items() if "dlq.value.truncated" in h]
        assert len(cut) == 1 and cut[0]["dlq.error.kind"] == "too_large"
        assert cut[0]["dlq.value.truncated"] == str(len(big))
        assert cut[0]["dlq.value.sha256"] == hashlib.sha256(big).hexdigest()

    got2 = {m.value(): header_dict(m.headers()) for m in dead2}
    assert len(dead2) == len(STAGE2_POISON)
    for value, kind in STAGE2_POISON.items():
        assert got2[value]["dlq.error.kind"] == kind and got2[value]["dlq.stage"] == "stage2"
        assert got2[value]["dlq.source.topic"] == settings.topic_flagged
        assert not any(k.startswith("retry.") for k in got2[value])

    # the transient failure: retried once after 1 s, decided then, main flow not blocked
    decided_twice = [t for t, v in by_transaction(tail.values(settings.topic_decisions)).items()
                     if len(v) > 1]  # fmt: skip
    assert not decided_twice
    retried = read_topic(settings, retry_topic(settings.topic_flagged, 1), worker.stats.flagged)
    assert len(retried) == worker.stats.flagged + 1  # + the stage-2 validation poison
    h = header_dict(retried[0].headers())
    assert h["retry.attempt"] == "1" and int(h["retry.at.ms"]) >= int(h["retry.first.ms"]) + 1000
    assert h["retry.source.offset"].isdigit()
    ref = reference(settings)
    assert all(orjson.loads(v[0]) == ref[t] for t, v in decided_by_tid(tail, settings).items())

    # the operator's view: dlq inspect, as JSON and as tables
    env = worker_env(settings)
    out = subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "inspect", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    summary = {s["topic"]: s for s in orjson.loads(out.stdout)}
    s1 = summary[settings.topic_dlq]
    assert s1["total"] == len(expected_dead) and s1["redriven"] == 0
    kinds = {(k["stage"], k["kind"]): k["count"] for k in s1["by_kind"]}
    for kind in set(expected_dead.values()):
        assert kinds[("stage1", kind)] == sum(1 for k in expected_dead.values() if k == kind)
    assert s1["by_age"]["< 1 h"] == len(expected_dead)
    assert summary[settings.topic_flagged_dlq]["total"] == len(STAGE2_POISON)
    tables = subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "inspect"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    assert "too_large" in tables and "validation" in tables and "samples" in tables
    with capsys.disabled():
        print(
            f"\npoison: {len(ids(df))} good decided, {len(dead1)} stage-1 and {len(dead2)} "
            f"stage-2 dead letters, kinds {kinds}; 5 MB message: default producer refused it "
            f"locally (MSG_SIZE_TOO_LARGE), with message.max.bytes raised: {outcome}"
        )
