"""Apache Kafka (KRaft) from Maven Central jars: what to run, rendered without running anything.

Where the jars live, the cluster id, each node's ``server.properties`` and log4j configuration,
and the java command lines. ``streams.kafka.apache`` starts and stops the processes.

The version is pinned here and in ``kafka/pom.xml`` (the fetch passes both versions to Maven, so
the pom's defaults only matter to someone running Maven by hand). Kafka 4.0-4.2 log through
SLF4J 1.7, hence ``log4j-slf4j-impl`` (the 1.x binding) in log4j 2.24.x for Kafka 4.1.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
JARS_ENV = "FRAUD_KAFKA_JARS"
REPO = Path(__file__).resolve().parents[2]
POM = REPO / "kafka" / "pom.xml"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # C1 only: far less start-up CPU on 2 cores
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def jars_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``FRAUD_KAFKA_JARS``, else ``${XDG_CACHE_HOME:-~/.cache}/fraudstream/kafka-<version>``."""
    env = os.environ if environ is None else environ
    if env.get(JARS_ENV):
        return Path(env[JARS_ENV]).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "fraudstream" / f"kafka-{KAFKA_VERSION}"


def jars_complete(directory: Path) -> bool:
    """The broker jar and the logging backend are there (a fetch writes them last-to-first
    into a temporary folder and renames it, so both present means the whole set is)."""
    return (directory / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file() and any(
        directory.glob("log4j-core-*.jar")
    )


def new_cluster_id() -> str:
    """22-character URL-safe base64 of a random UUID, as ``StorageTool random-uuid`` makes
    (never starting with '-', which a command line would take for an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int  # client listener
    controller_port: int
    directory: Path  # holds server.properties, log4j2.xml, server.log and data/
    internal_port: int | None = None  # inter-broker PLAINTEXT listener when clients use SASL/TLS

    @property
    def properties_file(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.directory / "log4j2.xml"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"


def internal_topic_sizes(nodes: int) -> dict[str, int]:
    """Replication factor min(3, N) and min ISR min(2, RF) for the internal topics; few
    partitions (Kafka's own test utilities use 5) for a small machine."""
    rf = min(3, nodes)
    isr = min(2, rf)
    return {
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": 5,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": 5,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "share.coordinator.state.topic.num.partitions": 5,
    }


STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
INTERNAL_PRINCIPAL = "User:ANONYMOUS"  # the brokers and controllers, over PLAINTEXT listeners


def client_protocol(sasl: bool, tls: bool) -> str:
    """The client listener's security protocol (and its listener name)."""
    return {
        (False, False): "PLAINTEXT",
        (True, False): "SASL_PLAINTEXT",
        (False, True): "SSL",
        (True, True): "SASL_SSL",
    }[(sasl, tls)]


def server_properties(
    nodes: list[Node],
    index: int,
    sasl: bool = False,
    extra: Mapping[str, object] | None = None,
    tls: Mapping[str, str] | None = None,
    super_users: Sequence[str] | None = None,
) -> dict[str, str]:
    """One node's configuration: combined broker+controller, a static controller quorum over
    all nodes, listeners on 127.0.0.1 only (``localhost`` may resolve to ::1). With ``sasl`` the
    client listener takes SCRAM logins, with ``tls`` (the broker's ``ssl.*`` settings) it speaks
    TLS; either way the brokers replicate over a PLAINTEXT ``INTERNAL`` listener. With
    ``super_users`` (principals, e.g. ``User:admin``) the standard authorizer enforces ACLs,
    denying what no ACL allows; the brokers' and controllers' own principal (ANONYMOUS on the
    PLAINTEXT listeners) is a super user as well."""
    node = nodes[index]
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "log.dirs": node.data_dir,
        "num.partitions": 1,
        "default.replication.factor": 1,
        **internal_topic_sizes(len(nodes)),
        "group.initial.rebalance.delay.ms": 0,
        # a small machine: few threads per node
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.replica.fetchers": 1,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
    }
    protocol = client_protocol(sasl, tls is not None)
    if protocol != "PLAINTEXT":
        assert node.internal_port is not None, "a SASL or TLS cluster needs internal ports"
        name = protocol.lower()
        props.update(
            {
                "listeners": f"{protocol}://127.0.0.1:{node.port},"
                f"INTERNAL://127.0.0.1:{node.internal_port},"
                f"CONTROLLER://127.0.0.1:{node.controller_port}",
                "advertised.listeners": f"{protocol}://127.0.0.1:{node.port},"
                f"INTERNAL://127.0.0.1:{node.internal_port}",
                "listener.security.protocol.map": f"{protocol}:{protocol},"
                "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name": "INTERNAL",
            }
        )
        if sasl:
            props["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
            for m in SCRAM_MECHANISMS:
                props[f"listener.name.{name}.{m.lower()}.sasl.jaas.config"] = SCRAM_LOGIN
        if tls is not None:
            props.update({f"listener.name.{name}.{k}": v for k, v in tls.items()})
    else:
        props.update(
            {
                "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                f"CONTROLLER://127.0.0.1:{node.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name": "PLAINTEXT",
            }
        )
    if super_users is not None:
        props.update(
            {
                "authorizer.class.name": STANDARD_AUTHORIZER,
                "super.users": ";".join([INTERNAL_PRINCIPAL, *super_users]),
                "allow.everyone.if.no.acl.found": "false",
            }
        )
    props.update(extra or {})
    return {key: str(value) for key, value in props.items()}


def render_properties(props: Mapping[str, str]) -> str:
    lines = ["# written by streams.kafka.apache; regenerated at every start"]
    for key, value in props.items():
        escaped = value.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"{key}={escaped}")
    return "\n".join(lines) + "\n"


def render_log4j(log_file: Path, level: str = "INFO") -> str:
    """log4j 2 configuration: everything into one file in the node's folder (never a pipe:
    an unread pipe stalls the JVM once it fills), request and state-change chatter at WARN."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="{log_file}" filePattern="{log_file}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="{level}"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
  </Loggers>
</Configuration>
"""


def scram_arguments(users: Mapping[str, str]) -> list[str]:
    """``StorageTool format`` arguments creating each SCRAM user for both mechanisms."""
    args: list[str] = []
    for name, password in users.items():
        for mechanism in SCRAM_MECHANISMS:
            args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    return args


def client_config(
    bootstrap: str, sasl_users: Mapping[str, str], ca_file: Path | None = None
) -> dict[str, object]:
    """confluent-kafka settings for a local cluster, as its first SASL user if it has any,
    trusting the test CA ``ca_file`` when its client listener speaks TLS."""
    conf: dict[str, object] = {"bootstrap.servers": bootstrap}
    protocol = client_protocol(bool(sasl_users), ca_file is not None)
    if protocol != "PLAINTEXT":
        conf["security.protocol"] = protocol
    if ca_file is not None:
        conf["ssl.ca.location"] = str(ca_file)
    if sasl_users:
        name, password = next(iter(sasl_users.items()))
        conf["sasl.mechanism"] = "SCRAM-SHA-512"
        conf["sasl.username"] = name
        conf["sasl.password"] = password
    return conf


def formatted_cluster_id(data_dir: Path) -> str | None:
    """The cluster id a log dir was formatted with (``meta.properties``), or None."""
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


def java_command(
    java: str, jars: Path, main: str, args: list[str], log4j: Path | None = None
) -> list[str]:
    cmd = [java, *JVM_OPTIONS]
    if log4j is not None:
        cmd.append(f"-Dlog4j2.configurationFile={log4j}")
    return [*cmd, "-cp", str(jars / "*"), main, *args]


def java_failure(output: str) -> str:
    """The line of a failed JVM tool's output that says why: the last one naming an exception
    or error (a stack trace ends with its frames, ``at ...``, which say where, not why), else
    the last line, else ``no output``."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    reasons = [
        ln for ln in lines if not ln.startswith("at ") and ("Exception" in ln or "Error" in ln)
    ]
    return (reasons or lines or ["no output"])[-1][:300]
