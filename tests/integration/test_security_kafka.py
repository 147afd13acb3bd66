"""TLS and ACLs on Apache Kafka (issue 14): one SASL_SSL broker with the standard authorizer.

The broker (``ApacheKafka(tls=True, authorizer=True)``) has a test CA and a broker certificate
made by openssl at start, SCRAM users ``admin`` (a super user: it creates the topics and ACLs),
``alice`` and ``stage1``, and denies whatever no ACL allows. The clients under test are
fraudstream's own (``streams.kafka.clients``, the stage-1 worker), configured only through the
``FRAUD_*`` variables a deployment sets. Needs Java 17+ and the cached jars; skipped elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streams.errors import BrokerError
from streams.kafka import clients
from streams.kafka.topics import create_topics, topic_names
from streams.settings import Settings, load_settings
from streams.stage1.worker import Stage1Worker
from tests.support import REPO, assert_one_error_line, isolated_settings

pytestmark = pytest.mark.integration

PASSWORDS = {"admin": "adm1n-Pa55", "alice": "al1ce-Pa55", "stage1": "st4ge1-Pa55"}


@dataclass(frozen=True)
class SecureKafka:
    bootstrap: str
    ca_file: str

    def env(self, user: str, ca: bool = True) -> dict[str, str]:
        """The variables a deployment sets to reach this broker as ``user``."""
        out = {
            "FRAUD_BOOTSTRAP_SERVERS": self.bootstrap,
            "FRAUD_SECURITY_PROTOCOL": "SASL_SSL",
            "FRAUD_SASL_MECHANISM": "SCRAM-SHA-512",
            "FRAUD_SASL_USERNAME": user,
            "FRAUD_SASL_PASSWORD": PASSWORDS[user],
        }
        if ca:
            out["FRAUD_SSL_CA_LOCATION"] = self.ca_file
        return out


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[SecureKafka]:
    from streams.kafka.apache_jars import java_available

    if not java_available():
        pytest.skip("TLS and ACLs are tested on Apache Kafka from the cached jars: no Java 17+")
    from streams.kafka.apache import ApacheKafka

    with ApacheKafka(sasl_users=PASSWORDS, tls=True, authorizer=True) as kafka:
        assert kafka.ca_file is not None
        yield SecureKafka(kafka.bootstrap, str(kafka.ca_file))


def settings_as(
    monkeypatch: pytest.MonkeyPatch, kafka: SecureKafka, user: str, **overrides: Any
) -> Settings:
    """Settings read from the environment as a deployment gives it (FRAUD_*), as ``user``."""
    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    for key, value in kafka.env(user).items():
        monkeypatch.setenv(key, value)
    return load_settings(**overrides)


def acl(
    principal: str,
    resource: ResourceType,
    name: str,
    operation: AclOperation,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
) -> AclBinding:
    return AclBinding(
        resource, name, pattern, principal, "*", operation, AclPermissionType.ALLOW
    )  # fmt: skip


def grant(admin_settings: Settings, bindings: list[AclBinding]) -> None:
    client = clients.admin(admin_settings)  # kept alive until the results are in
    for future in client.create_acls(bindings).values():
        future.result(timeout=30)


# --- TLS ---------------------------------------------------------------------------------------
def test_a_scram_user_round_trips_over_sasl_ssl_with_the_test_ca(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"tls-{tag}", f"tls-{tag}"
    admin = settings_as(monkeypatch, secure_kafka, "admin", partitions=1)
    create_topics(admin, [topic])
    principal = "User:alice"
    grant(
        admin,
        [
            acl(principal, ResourceType.TOPIC, topic, AclOperation.WRITE),
            acl(principal, ResourceType.TOPIC, topic, AclOperation.READ),
            acl(principal, ResourceType.GROUP, group, AclOperation.READ),
        ],
    )
    alice = settings_as(monkeypatch, secure_kafka, "alice")
    assert alice.effective_security_protocol() == "SASL_SSL"
    assert clients._common(alice)["ssl.ca.location"] == secure_kafka.ca_file
    clients.check_reachable(alice)
    producer = clients.producer(alice)
    producer.produce(topic, key=b"k", value=b'{"hello": "tls"}')
    assert producer.flush(20) == 0
    consumer = clients.consumer(alice, group, **{"enable.auto.offset.store": True})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.value() == b'{"hello": "tls"}'
                return
        raise AssertionError("the record did not come back over SASL_SSL")
    finally:
        consumer.close()


def test_a_client_that_does_not_trust_the_ca_is_refused_in_one_line(
    secure_kafka: SecureKafka,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update(secure_kafka.env("alice", ca=False), FRAUD_CONNECT_TIMEOUT_S="3")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streams", "topics", "create"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    line = assert_one_error_line(
        result.returncode, result.stderr, secure_kafka.bootstrap, "FRAUD_SSL_CA_LOCATION"
    )
    assert "certificate verify failed" in line, line
    print(f"\n{line}")
    assert PASSWORDS["alice"] not in result.stderr + result.stdout
    assert time.monotonic() - started < 30


# --- ACLs --------------------------------------------------------------------------------------
def stage1_acls(s: Settings, principal: str = "User:stage1") -> list[AclBinding]:
    """What a stage-1 worker needs (docs/operations.md, "Security"), except WRITE on decisions:
    READ its inputs and its consumer groups (the group and ``<group>-labels``: a prefix), WRITE
    its outputs (flagged records, dead letters), READ and WRITE its checkpoints."""
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    read, write = AclOperation.READ, AclOperation.WRITE
    return [
        acl(principal, topic, s.topic_transactions, read),
        acl(principal, topic, s.topic_labels, read),
        acl(principal, group, s.stage1_group, read, ResourcePatternType.PREFIXED),
        acl(principal, topic, s.topic_flagged, write),
        acl(principal, topic, s.topic_dlq, write),
        acl(principal, topic, s.topic_checkpoints, read),
        acl(principal, topic, s.topic_checkpoints, write),
    ]


@dataclass
class WorkerThread:
    worker: Stage1Worker
    thread: threading.Thread
    error: list[BaseException] = field(default_factory=list)


def start_worker(s: Settings) -> WorkerThread:
    worker = Stage1Worker(s)
    out = WorkerThread(worker, threading.Thread(daemon=True))

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            out.error.append(exc)

    out.thread = threading.Thread(target=run, daemon=True)
    out.thread.start()
    return out


def produce_transactions(s: Settings, n: int) -> list[str]:
    tids = [f"acl-{i}" for i in range(n)]
    sink = clients.CheckedProducer(s, 30)
    for i, tid in enumerate(tids):
        tx = {
            "transaction_id": tid,
            "card_id": str(i % 7),
            "terminal_id": str(i % 5),
            "amount": 10.0 + i,
            "timestamp": f"2018-04-05T10:{i:02d}:00",
        }
        sink.send(s.topic_transactions, orjson.dumps(tx), str(i % 7).encode())
    sink.close(f"of {n} transactions")
    return tids


def read_all(s: Settings, topics: list[str]) -> list[Any]:
    """Every record of ``topics`` now (up to each partition's high watermark)."""
    consumer = clients.consumer(
        s, f"reader-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}
    )
    out: list[Any] = []
    try:
        ends: dict[tuple[str, int], int] = {}
        for t in topics:
            for p in consumer.list_topics(t, timeout=10).topics[t].partitions:
                ends[(t, p)] = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
        wanted = {k: v for k, v in ends.items() if v > 0}
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in wanted])
        deadline = time.monotonic() + 30
        while wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            out.append(msg)
            key = (msg.topic(), msg.partition())
            if key in wanted and msg.offset() + 1 >= wanted[key]:
                del wanted[key]
        assert not wanted, f"could not read {wanted} back"
    finally:
        consumer.close()
    return out


def decided(s: Settings) -> set[str]:
    """Transaction ids with a stage-1 output: an approve decision or a flagged record."""
    return {
        orjson.loads(m.value())["transaction_id"]
        for m in read_all(s, [s.topic_decisions, s.topic_flagged])
    }


def committed(s: Settings) -> dict[int, int]:
    """The stage-1 group's committed offsets on the transactions topic (-1: none)."""
    consumer: Consumer = clients.consumer(s, s.stage1_group, **{"enable.auto.commit": False})
    try:
        tps = [TopicPartition(s.topic_transactions, p) for p in range(s.partitions)]
        return {tp.partition: max(tp.offset, -1) for tp in consumer.committed(tps, timeout=15)}
    finally:
        consumer.close()


def test_stage1_without_write_on_decisions_stops_clearly_and_loses_nothing(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = settings_as(monkeypatch, secure_kafka, "admin")
    base = isolated_settings(secure_kafka.bootstrap)
    names = {
        k: getattr(base, k)
        for k in (
            "topic_transactions", "topic_flagged", "topic_decisions", "topic_labels",
            "topic_dlq", "topic_flagged_dlq", "stage1_group", "stage2_app_id", "partitions",
            "rules_dir", "model_dir", "policy_file",
        )
    }  # fmt: skip
    names["topic_checkpoints"] = base.topic_transactions.replace(".transactions", ".checkpoints")
    admin = admin.model_copy(update=names)
    create_topics(admin, topic_names(admin))
    grant(admin, stage1_acls(admin))
    tids = produce_transactions(admin, 40)

    stage1 = settings_as(monkeypatch, secure_kafka, "stage1", **names)
    started = time.monotonic()
    first = start_worker(stage1)
    first.thread.join(90)
    assert not first.thread.is_alive(), "the worker neither decided nor stopped"
    assert len(first.error) == 1, first.error
    message = str(first.error[0])
    assert isinstance(first.error[0], BrokerError), message
    assert "\n" not in message
    assert f"{admin.topic_decisions}: TOPIC_AUTHORIZATION_FAILED" in message, message
    assert "WRITE" in message, message
    stopped_s = time.monotonic() - started
    print(f"\nstage 1 without WRITE on decisions: {message}")

    # nothing lost: no committed offset passes a transaction that has no output
    outputs = decided(admin)
    source = read_all(admin, [admin.topic_transactions])
    assert len(source) == len(tids)
    undecided_from: dict[int, int] = {}
    for msg in sorted(source, key=lambda m: (m.partition(), m.offset())):
        if orjson.loads(msg.value())["transaction_id"] not in outputs:
            undecided_from.setdefault(msg.partition(), msg.offset())
    assert undecided_from, "every transaction got an output: the refusal proved nothing"
    offsets = committed(admin)
    for partition, offset in offsets.items():
        if partition in undecided_from:
            assert offset <= undecided_from[partition], (partition, offset, undecided_from)

    # with WRITE on decisions, a restarted worker decides every transaction
    grant(
        admin,
        [acl("User:stage1", ResourceType.TOPIC, admin.topic_decisions, AclOperation.WRITE)],
    )
    second = start_worker(stage1)
    try:
        deadline = time.monotonic() + 90
        missing = set(tids)
        while missing and time.monotonic() < deadline and second.thread.is_alive():
            missing = set(tids) - decided(admin)
            if missing:
                time.sleep(1)
        assert not second.error, second.error
        assert not missing, f"{len(missing)} transactions without a decision: {sorted(missing)[:5]}"
    finally:
        second.worker.stop_event.set()
        second.thread.join(30)
    assert not second.error, second.error
    print(
        f"\nrefused and stopped in {stopped_s:.1f}s; committed before the grant: {offsets}; "
        f"undecided from {undecided_from}"
    )
