"""Apache Kafka configuration rendering, without starting a process."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streams.errors import BrokerError
from streams.kafka import apache_config as cfg
from streams.kafka import apache_jars as apache


def nodes(n: int, tmp_path: Path, sasl: bool = False) -> list[cfg.Node]:
    return [
        cfg.Node(
            node_id=i,
            port=9092 + i,
            controller_port=19092 + i,
            directory=tmp_path / f"node-{i}",
            internal_port=29092 + i if sasl else None,
        )
        for i in range(n)
    ]


def test_cluster_id_is_22_url_safe_base64_characters_of_a_uuid() -> None:
    for _ in range(200):
        cid = cfg.new_cluster_id()
        assert len(cid) == 22 and re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert cfg.new_cluster_id() != cfg.new_cluster_id()


def test_single_node_is_a_combined_broker_and_controller_on_loopback(tmp_path: Path) -> None:
    props = cfg.server_properties(nodes(1, tmp_path), 0)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "0"
    assert props["controller.quorum.voters"] == "0@127.0.0.1:19092"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19092"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert "localhost" not in "".join(props.values())
    assert props["log.dirs"] == str(tmp_path / "node-0" / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["share.coordinator.state.topic.replication.factor"] == "1"
    assert props["offsets.topic.num.partitions"] == "5"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["num.io.threads"]) <= 2 and int(props["num.network.threads"]) <= 2


def test_three_nodes_share_one_quorum_with_their_own_ports_and_dirs(tmp_path: Path) -> None:
    cluster = nodes(3, tmp_path)
    rendered = [cfg.server_properties(cluster, i) for i in range(3)]
    voters = {p["controller.quorum.voters"] for p in rendered}
    assert voters == {"0@127.0.0.1:19092,1@127.0.0.1:19093,2@127.0.0.1:19094"}
    assert len({p["listeners"] for p in rendered}) == 3
    assert len({p["log.dirs"] for p in rendered}) == 3
    assert [p["node.id"] for p in rendered] == ["0", "1", "2"]
    for p in rendered:
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"


@pytest.mark.parametrize(("n", "rf", "isr"), [(1, 1, 1), (2, 2, 2), (3, 3, 2), (5, 3, 2)])
def test_internal_topics_replicate_to_min_3_n(n: int, rf: int, isr: int) -> None:
    sizes = cfg.internal_topic_sizes(n)
    assert sizes["offsets.topic.replication.factor"] == rf
    assert sizes["transaction.state.log.min.isr"] == isr


def test_extra_config_overrides_and_values_are_strings(tmp_path: Path) -> None:
    props = cfg.server_properties(
        nodes(1, tmp_path), 0, extra={"group.min.session.timeout.ms": 1000, "num.io.threads": 4}
    )
    assert props["group.min.session.timeout.ms"] == "1000"
    assert props["num.io.threads"] == "4"


def test_sasl_cluster_takes_scram_logins_and_replicates_over_an_internal_listener(
    tmp_path: Path,
) -> None:
    props = cfg.server_properties(nodes(2, tmp_path, sasl=True), 1, sasl=True)
    assert props["listeners"].startswith(
        "SASL_PLAINTEXT://127.0.0.1:9093,INTERNAL://127.0.0.1:29093"
    )
    assert "INTERNAL:PLAINTEXT" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "INTERNAL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    jaas = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert jaas.startswith("org.apache.kafka.common.security.scram.ScramLoginModule required")
    args = cfg.scram_arguments({"alice": "s3cret"})
    assert args == [
        "--add-scram",
        "SCRAM-SHA-256=[name=alice,password=s3cret]",
        "--add-scram",
        "SCRAM-SHA-512=[name=alice,password=s3cret]",
    ]


def test_properties_file_round_trips(tmp_path: Path) -> None:
    props = cfg.server_properties(nodes(1, tmp_path), 0)
    text = cfg.render_properties(props)
    parsed = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert parsed == props


def test_log4j_writes_to_a_file_in_the_node_folder(tmp_path: Path) -> None:
    log_file = tmp_path / "node-0" / "server.log"
    root = ET.fromstring(cfg.render_log4j(log_file))
    appenders = root.find("Appenders")
    assert appenders is not None
    kinds = [a.tag for a in appenders]
    assert kinds == ["RollingFile"]  # no Console appender: never a pipe
    assert appenders[0].get("fileName") == str(log_file)


def test_java_command_sets_heap_gc_and_classpath(tmp_path: Path) -> None:
    cmd = cfg.java_command("java", tmp_path, "kafka.Kafka", ["server.properties"], tmp_path / "l")
    assert cmd[0] == "java"
    assert "-Xmx512m" in cmd and "-XX:+UseSerialGC" in cmd and "-XX:TieredStopAtLevel=1" in cmd
    assert f"-Dlog4j2.configurationFile={tmp_path / 'l'}" in cmd
    assert cmd[-4:] == ["-cp", f"{tmp_path}/*", "kafka.Kafka", "server.properties"]


def test_jars_dir_follows_the_override_then_xdg_cache(tmp_path: Path) -> None:
    assert cfg.jars_dir({cfg.JARS_ENV: str(tmp_path)}) == tmp_path
    expected = tmp_path / "fraudstream" / f"kafka-{cfg.KAFKA_VERSION}"
    assert cfg.jars_dir({"XDG_CACHE_HOME": str(tmp_path)}) == expected


def test_pom_pins_the_same_versions_as_the_code() -> None:
    pom = ET.parse(cfg.POM).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert pom.findtext("m:properties/m:kafka.version", namespaces=ns) == cfg.KAFKA_VERSION
    assert pom.findtext("m:properties/m:log4j.version", namespaces=ns) == cfg.LOG4J_VERSION
    artifacts = {a.text for a in pom.iterfind(".//m:dependency/m:artifactId", ns)}
    assert {"kafka_2.13", "log4j-core", "log4j-slf4j-impl"} <= artifacts


def test_jars_complete_needs_the_broker_and_the_logging_backend(tmp_path: Path) -> None:
    assert not cfg.jars_complete(tmp_path)
    (tmp_path / f"kafka_2.13-{cfg.KAFKA_VERSION}.jar").touch()
    assert not cfg.jars_complete(tmp_path)
    (tmp_path / f"log4j-core-{cfg.LOG4J_VERSION}.jar").touch()
    assert cfg.jars_complete(tmp_path)


def test_missing_java_and_maven_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError, match="Java 17 or newer") as info:
        apache.require_java()
    assert "\n" not in str(info.value)
    with pytest.raises(BrokerError, match="no `mvn`") as info:
        apache.fetch_jars(tmp_path / "jars")
    assert "\n" not in str(info.value)


def test_java_major_reads_old_and_new_version_strings(tmp_path: Path) -> None:
    for text, major in (
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_1"', 8),
    ):
        fake = tmp_path / f"java{major}"
        fake.write_text(f"#!/bin/sh\necho '{text}' >&2\n")
        fake.chmod(0o755)
        assert apache.java_major(str(fake)) == major


def test_a_failed_jvm_tool_is_reported_by_its_exception_not_its_last_stack_frame() -> None:
    out = (
        "Formatting metadata directory /tmp/n2 with metadata.version 4.1-IV1.\n"
        'Exception in thread "main" java.lang.RuntimeException: Log directory /tmp/n2 is '
        "already formatted\n"
        "\tat kafka.tools.StorageTool$.formatCommand(StorageTool.scala:120)\n"
        "\tat kafka.tools.StorageTool.main(StorageTool.scala)\n"
    )
    assert cfg.java_failure(out) == (
        'Exception in thread "main" java.lang.RuntimeException: Log directory /tmp/n2 is '
        "already formatted"
    )
    caused = out + "Caused by: java.io.IOException: No space left on device\n\tat x.y(Z.java:1)\n"
    assert cfg.java_failure(caused) == "Caused by: java.io.IOException: No space left on device"
    assert cfg.java_failure("just a line\n") == "just a line"
    assert cfg.java_failure("") == "no output"
