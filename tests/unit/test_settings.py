"""Settings: precedence (flags > FRAUD_* env > YAML file > defaults), secrets never shown,
security settings shared by the confluent-kafka and faust clients."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli.main import main
from streams.errors import ConfigError
from streams.kafka.faust_config import faust_broker_settings
from streams.logging_setup import setup_logging
from streams.settings import MASK, Settings, load_settings

PASSWORD = "s3cr3t-Pa55word-never-shown"
PSEUDO_KEY = "pseudonymise-me-key-0123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FRAUD_"):
            monkeypatch.delenv(name)


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fraud.yaml"
    path.write_text(text)
    return path


# --- precedence ------------------------------------------------------------------------------
def test_defaults() -> None:
    s = load_settings()
    assert s.partitions == 4
    assert s.bootstrap_servers is None
    assert s.config_file is None


def test_flags_beat_env_beat_file_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = yaml_file(
        tmp_path,
        "partitions: 7\nstage1_batch_size: 111\nlog_level: DEBUG\nbootstrap_servers: file:9092\n",
    )
    monkeypatch.setenv("FRAUD_PARTITIONS", "9")
    monkeypatch.setenv("FRAUD_BOOTSTRAP_SERVERS", "env:9092")
    s = load_settings(path, bootstrap_servers="flag:9092", stage2_batch_size=None)
    assert s.bootstrap_servers == "flag:9092"  # flag over env and file
    assert s.partitions == 9  # env over file
    assert s.stage1_batch_size == 111  # file over default
    assert s.log_level == "DEBUG"
    assert s.stage2_batch_size == 500  # default; an unset flag (None) changes nothing
    assert s.config_file == path


def test_config_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_CONFIG", str(yaml_file(tmp_path, "partitions: 7\n")))
    assert load_settings().partitions == 7
    assert Settings().partitions == 7


def test_config_flag_beats_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text("partitions: 5\n")
    monkeypatch.setenv("FRAUD_CONFIG", str(env_file))
    assert load_settings(yaml_file(tmp_path, "partitions: 7\n")).partitions == 7


def test_loading_a_config_file_leaves_the_environment_alone(tmp_path: Path) -> None:
    before = dict(os.environ)
    load_settings(yaml_file(tmp_path, "partitions: 7\n"))
    assert dict(os.environ) == before
    assert load_settings().partitions == 4  # the next load does not see the previous file


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("partitions: [\n", "invalid YAML"),
        ("- a\n- b\n", "mapping"),
        ("bootstap_servers: x\n", "bootstap_servers"),
        ("partitions: many\n", "partitions"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        load_settings(yaml_file(tmp_path, text))
    assert "\n" not in str(info.value)


def test_empty_config_file_is_fine(tmp_path: Path) -> None:
    assert load_settings(yaml_file(tmp_path, "# nothing\n")).partitions == 4


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


# --- secrets ------------------------------------------------------------------------------------
def secret_settings(**extra: object) -> Settings:
    return load_settings(
        bootstrap_servers="broker:9092",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="fraud",
        sasl_password=PASSWORD,
        pseudonymize_key=PSEUDO_KEY,
        **extra,
    )


def test_repr_str_and_masked_never_show_secrets() -> None:
    s = secret_settings()
    for text in (repr(s), str(s), orjson.dumps(s.masked()).decode(), repr(s.model_dump())):
        assert PASSWORD not in text
        assert PSEUDO_KEY not in text
    assert s.masked()["sasl_password"] == MASK
    assert s.masked()["pseudonymize_key"] == MASK
    assert s.masked()["sasl_username"] == "fraud"


def test_unset_secrets_show_as_null() -> None:
    assert load_settings().masked()["sasl_password"] is None


def test_config_show_masks_secrets_and_follows_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = yaml_file(tmp_path, f"partitions: 7\nsasl_password: {PASSWORD}\n")
    monkeypatch.setenv("FRAUD_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("FRAUD_SASL_USERNAME", "fraud")
    monkeypatch.setenv("FRAUD_PSEUDONYMIZE_KEY", PSEUDO_KEY)
    monkeypatch.setenv("FRAUD_LOG_LEVEL", "DEBUG")  # what is logged must not leak either
    with pytest.raises(SystemExit) as info:
        main(["config", "show", "--config", str(path), "--bootstrap", "flag:9092"])
    assert info.value.code == 0
    out, err = capsys.readouterr()
    shown = orjson.loads(out)
    assert shown["bootstrap_servers"] == "flag:9092"
    assert shown["partitions"] == 7
    assert shown["sasl_password"] == MASK
    assert shown["pseudonymize_key"] == MASK
    assert shown["config_file"] == str(path)
    assert PASSWORD not in out + err
    assert PSEUDO_KEY not in out + err


def test_as_env_round_trips_with_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    s = secret_settings(partitions=3, rules_reload=False)
    env = s.as_env()
    assert env["FRAUD_SASL_PASSWORD"] == PASSWORD
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    again = load_settings()
    assert again == s


def test_log_lines_mask_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    s = secret_settings()
    for fmt in ("plain", "json"):
        setup_logging("INFO", fmt, s.secret_values())
        log = logging.getLogger("streams.test")
        log.info("connecting with %s", s.kafka_common())
        try:
            raise RuntimeError(f"library message quoting {PASSWORD}")
        except RuntimeError:
            log.exception("failed")
        err = capsys.readouterr().err
        assert "connecting with" in err and "failed" in err
        assert PASSWORD not in err, fmt
        assert MASK in err
    setup_logging()


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(sasl_password=PASSWORD, sasl_mechanism="KERBEROS", sasl_username="u")
    assert "KERBEROS" in str(info.value)
    assert PASSWORD not in str(info.value)


# --- security settings for both client libraries -------------------------------------------------
def test_plaintext_by_default() -> None:
    s = load_settings(bootstrap_servers="a:9092")
    assert s.kafka_common() == {"bootstrap.servers": "a:9092"}
    assert "broker_credentials" not in faust_broker_settings(s)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = load_settings(
        bootstrap_servers="a:9092,b:9093",
        sasl_mechanism=mechanism,
        sasl_username="fraud",
        sasl_password=PASSWORD,
    )
    assert s.kafka_common() == {
        "bootstrap.servers": "a:9092,b:9093",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism.upper(),
        "sasl.username": "fraud",
        "sasl.password": PASSWORD,
    }
    conf = faust_broker_settings(s)
    assert conf["broker"] == "kafka://a:9092;kafka://b:9093"
    auth = credentials_to_aiokafka_auth(conf["broker_credentials"])
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == mechanism.upper()
    assert auth["sasl_plain_username"] == "fraud"
    assert auth["sasl_plain_password"] == PASSWORD
    assert auth["ssl_context"] is None
    assert PASSWORD not in repr(conf)


def test_sasl_ssl_with_a_ca() -> None:
    import ssl

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    certifi = pytest.importorskip("certifi", reason="a CA bundle file to load")
    ca = certifi.where()
    s = load_settings(
        bootstrap_servers="a:9093",
        security_protocol="sasl_ssl",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="fraud",
        sasl_password=PASSWORD,
        ssl_ca_location=ca,
    )
    common = s.kafka_common()
    assert common["security.protocol"] == "SASL_SSL"
    assert common["ssl.ca.location"] == ca
    auth = credentials_to_aiokafka_auth(faust_broker_settings(s)["broker_credentials"])
    assert auth["security_protocol"] == "SASL_SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_tls_only() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = load_settings(bootstrap_servers="a:9093", security_protocol="SSL")
    assert s.kafka_common() == {"bootstrap.servers": "a:9093", "security.protocol": "SSL"}
    auth = credentials_to_aiokafka_auth(faust_broker_settings(s)["broker_credentials"])
    assert auth["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"security_protocol": "SASL_SSL"}, "FRAUD_SASL_MECHANISM"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u"}, "FRAUD_SASL_PASSWORD"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        (
            {"sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
            "sasl_mechanism",
        ),
    ],
)
def test_incomplete_security_settings_are_config_errors(
    overrides: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(bootstrap_servers="a:9092", **overrides)


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    from streams.kafka.clients import admin

    s = load_settings(
        bootstrap_servers="a:9093",
        security_protocol="SSL",
        ssl_ca_location=str(tmp_path / "no-ca.pem"),
    )
    with pytest.raises(ConfigError, match=r"no-ca\.pem"):
        admin(s)
    with pytest.raises(ConfigError, match=r"no-ca\.pem"):
        faust_broker_settings(s)


def test_linger_and_fetch_wait_reach_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.kafka import clients

    built: list[dict[str, Any]] = []
    monkeypatch.setattr(clients, "_make", lambda factory, conf: built.append(conf))
    monkeypatch.setenv("FRAUD_LINGER_MS", "17")
    monkeypatch.setenv("FRAUD_FETCH_WAIT_MS", "23")
    s = load_settings(bootstrap_servers="a:9092")
    clients.producer(s)
    clients.consumer(s, "g")
    clients.consumer(s, "g", **{"fetch.wait.max.ms": 250})
    assert built[0]["linger.ms"] == 17
    assert built[1]["fetch.wait.max.ms"] == 23
    assert built[2]["fetch.wait.max.ms"] == 250  # a caller's own wait wins (the labels reader)


def test_min_insync_replicas_reaches_every_topic_created(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.kafka import topics

    class Admin:
        def __init__(self) -> None:
            self.created: list[Any] = []

        def list_topics(self, timeout: float) -> Any:
            return type("Meta", (), {"topics": {}})()

        def create_topics(self, new: list[Any], operation_timeout: float) -> dict[str, Any]:
            self.created += new
            done = type("Done", (), {"result": lambda self: None})()
            return {t.topic: done for t in new}

    admin = Admin()
    monkeypatch.setattr(topics, "admin", lambda settings: admin)
    s = load_settings(bootstrap_servers="a:9092", replication_factor=3, min_insync_replicas=2)
    topics.create_topics(s)
    assert {t.topic for t in admin.created} == set(topics.topic_names(s))
    for t in admin.created:
        assert t.replication_factor == 3 and t.config["min.insync.replicas"] == "2"
    unset = load_settings(bootstrap_servers="a:9092")
    assert "min.insync.replicas" not in topics.topic_config(unset, topics.TOPIC_CONFIG)
    with pytest.raises(ConfigError, match=r"min_insync_replicas \(3\) exceeds replication_factor"):
        load_settings(bootstrap_servers="a:9092", min_insync_replicas=3)
