"""SASL against real brokers.

On the embedded broker (Tansu with ``--authentication``) a login cannot succeed: it cannot hold
SASL users (``streams.kafka.embedded.SASL_LIMITATION``), so these tests check how clients fail
there (clearly, in one line, without leaking the password). The successful round trip runs on
Apache Kafka from the cached jars (SCRAM users created at format time) whenever Java 17+ is
present, and skips with that reason elsewhere. Or give a SASL broker of your own:

    FRAUD_TEST_SASL_BOOTSTRAP=host:9093 FRAUD_TEST_SASL_MECHANISM=SCRAM-SHA-512 \\
    FRAUD_TEST_SASL_USERNAME=fraud FRAUD_TEST_SASL_PASSWORD=... \\
    [FRAUD_TEST_SASL_PROTOCOL=SASL_SSL FRAUD_TEST_SASL_CA=ca.pem] \\
    pytest tests/integration/test_sasl.py
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from streams.errors import BrokerError
from streams.kafka import clients
from streams.kafka.embedded import SASL_LIMITATION, EmbeddedBroker
from streams.kafka.faust_config import faust_broker_settings
from streams.kafka.topics import create_topics
from streams.settings import Settings, load_settings
from tests.support import REPO

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "wr0ng-Pa55word-never-shown"


@pytest.fixture(scope="module")
def auth_broker() -> Iterator[str]:
    with EmbeddedBroker(authentication=True) as broker:
        yield broker.bootstrap


def sasl_settings(bootstrap: str, mechanism: str, password: str, **extra: object) -> Settings:
    return load_settings(
        bootstrap_servers=bootstrap,
        sasl_mechanism=mechanism,
        sasl_username="alice",
        sasl_password=password,
        connect_timeout_s=2.0,
        **extra,
    )


RIGHT_PASSWORD = "r1ght-Pa55word"


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[Settings]:
    """A SASL broker that holds users: FRAUD_TEST_SASL_BOOTSTRAP, else Apache Kafka with SCRAM
    user alice (needs Java 17+); skipped when neither is there."""
    given = external_sasl()
    if given is not None:
        yield given
        return
    from streams.kafka.apache_jars import java_available

    if not java_available():
        pytest.skip(f"no SASL broker given (FRAUD_TEST_SASL_BOOTSTRAP), no Java 17+ for Apache "
                    f"Kafka: {SASL_LIMITATION}")  # fmt: skip
    from streams.kafka.apache import ApacheKafka

    with ApacheKafka(sasl_users={"alice": RIGHT_PASSWORD}) as kafka:
        yield sasl_settings(kafka.bootstrap, "SCRAM-SHA-512", RIGHT_PASSWORD)


def external_sasl() -> Settings | None:
    env = os.environ
    if not env.get("FRAUD_TEST_SASL_BOOTSTRAP"):
        return None
    return load_settings(
        bootstrap_servers=env["FRAUD_TEST_SASL_BOOTSTRAP"],
        security_protocol=env.get("FRAUD_TEST_SASL_PROTOCOL"),
        sasl_mechanism=env.get("FRAUD_TEST_SASL_MECHANISM", "SCRAM-SHA-512"),
        sasl_username=env.get("FRAUD_TEST_SASL_USERNAME"),
        sasl_password=env.get("FRAUD_TEST_SASL_PASSWORD"),
        ssl_ca_location=env.get("FRAUD_TEST_SASL_CA"),
    )


# --- the embedded broker with --authentication -----------------------------------------------
def test_a_client_without_credentials_is_told_to_set_them(auth_broker: str) -> None:
    settings = load_settings(bootstrap_servers=auth_broker, connect_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        clients.check_reachable(settings)
    message = str(info.value)
    assert "\n" not in message
    assert auth_broker in message
    assert "FRAUD_SECURITY_PROTOCOL" in message and "FRAUD_SASL_" in message
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_wrong_scram_credentials_fail_clearly(auth_broker: str, mechanism: str) -> None:
    settings = sasl_settings(auth_broker, mechanism, WRONG_PASSWORD)
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        clients.check_reachable(settings)
    message = str(info.value)
    assert "\n" not in message
    assert f"refused authentication ({mechanism} as user 'alice')" in message
    assert "FRAUD_SASL_PASSWORD" in message
    assert WRONG_PASSWORD not in message
    assert time.monotonic() - started < 10


def test_wrong_credentials_through_the_cli(auth_broker: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update(
        FRAUD_SASL_MECHANISM="SCRAM-SHA-256",
        FRAUD_SASL_USERNAME="alice",
        FRAUD_SASL_PASSWORD=WRONG_PASSWORD,
        FRAUD_LOG_LEVEL="DEBUG",
    )
    result = subprocess.run(
        [sys.executable, "-m", "streams", "topics", "create", "--bootstrap", auth_broker],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "refused authentication" in errors[0]
    assert "Traceback" not in result.stderr
    assert WRONG_PASSWORD not in result.stderr + result.stdout


def test_faust_side_uses_the_same_credentials_and_fails_too(auth_broker: str) -> None:
    """The aiokafka client faust uses gets the same SCRAM settings, and is refused as well
    (aiokafka reports the broker's SCRAM error as a bare KeyError; ``broker_for`` checks the
    broker with confluent-kafka first, so a worker stops with the clear message above)."""
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = sasl_settings(auth_broker, "SCRAM-SHA-512", WRONG_PASSWORD)
    auth = credentials_to_aiokafka_auth(faust_broker_settings(settings)["broker_credentials"])
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"

    async def connect() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=auth_broker, request_timeout_ms=3000, **auth)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(Exception):  # noqa: B017 - aiokafka raises KeyError('v') here
        asyncio.run(asyncio.wait_for(connect(), 10))


# --- a successful login: needs a broker that can hold users ----------------------------------
def round_trip(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"topic_transactions": f"sasl-{tag}", "partitions": 1})
    clients.check_reachable(s)
    create_topics(s, [s.topic_transactions])
    producer = clients.producer(s)
    producer.produce(s.topic_transactions, key=b"k", value=b'{"hello": "sasl"}')
    assert producer.flush(10) == 0
    consumer = clients.consumer(s, f"sasl-{tag}", **{"enable.auto.offset.store": True})
    consumer.subscribe([s.topic_transactions])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.value() == b'{"hello": "sasl"}'
                return
        raise AssertionError("the message did not come back")
    finally:
        consumer.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_round_trip_with_the_right_credentials(sasl_broker: Settings, mechanism: str) -> None:
    if external_sasl() is not None and mechanism != sasl_broker.sasl_mechanism:
        pytest.skip(f"the given SASL broker's mechanism is {sasl_broker.sasl_mechanism}")
    round_trip(sasl_broker.model_copy(update={"sasl_mechanism": mechanism}))


def test_faust_side_logs_in_with_the_right_credentials(sasl_broker: Settings) -> None:
    """aiokafka (faust's client) gets the settings' SCRAM credentials and logs in."""
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    if sasl_broker.effective_security_protocol() != "SASL_PLAINTEXT":
        pytest.skip("the given SASL broker needs TLS; this check uses SASL_PLAINTEXT")
    auth = credentials_to_aiokafka_auth(faust_broker_settings(sasl_broker)["broker_credentials"])
    tag = uuid.uuid4().hex[:8]
    s = sasl_broker.model_copy(update={"topic_transactions": f"sasl-faust-{tag}", "partitions": 1})
    create_topics(s, [s.topic_transactions])

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, request_timeout_ms=10000, **auth
        )
        await producer.start()
        try:
            await producer.send_and_wait(s.topic_transactions, b"from-aiokafka")
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(send(), 30))


def test_wrong_password_on_a_real_sasl_broker(sasl_broker: Settings) -> None:
    wrong = sasl_broker.model_copy(
        update={"sasl_password": SecretStr(WRONG_PASSWORD), "connect_timeout_s": 3}
    )
    with pytest.raises(BrokerError, match="refused authentication") as info:
        clients.check_reachable(wrong)
    assert WRONG_PASSWORD not in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_user_on_a_real_sasl_broker(sasl_broker: Settings) -> None:
    """A user the broker does not hold is refused the same way as a wrong password: one line
    naming the mechanism and the user (SCRAM does not say which of the two was wrong)."""
    missing = f"nobody-{uuid.uuid4().hex[:6]}"
    settings = sasl_broker.model_copy(
        update={
            "sasl_username": missing,
            "sasl_password": SecretStr(RIGHT_PASSWORD),
            "connect_timeout_s": 3,
        }
    )
    with pytest.raises(BrokerError, match="refused authentication") as info:
        clients.check_reachable(settings)
    message = str(info.value)
    assert "\n" not in message
    assert f"as user '{missing}'" in message, message
    assert RIGHT_PASSWORD not in message
