"""Apache Kafka in KRaft mode, run from the Maven Central jars: one JVM per node on 127.0.0.1.

    with ApacheKafka(nodes=3) as kafka:
        kafka.bootstrap            # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        kafka.kill_node(0)         # SIGKILL, for failover tests
        kafka.stop_node(1)         # SIGTERM: a controlled shutdown
        kafka.start_nodes([0, 1])

Node ids are the node indexes (0..N-1). Each node is a combined broker+controller; the N nodes
form the controller quorum. The jars are fetched with Maven on first use (``python -m
streams.kafka.apache fetch`` does it ahead of time; ``make install`` runs that). Every node gets
``PR_SET_PDEATHSIG``: it dies with the thread that started it, so start nodes from a thread that
outlives them (the main thread, a session fixture), not from a short-lived worker thread.

Configuration rendering lives in ``streams.kafka.apache_config``; finding Java and fetching the
jars in ``streams.kafka.apache_jars``.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from streams.errors import BrokerError
from streams.kafka import apache_config as cfg
from streams.kafka.apache_jars import fetch_jars, main, require_java
from streams.kafka.apache_tls import TlsFiles, make_test_tls
from streams.kafka.embedded import ProbeLogger, _die_with_parent, free_port

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ApacheKafka:
    """A local Apache Kafka cluster of ``nodes`` combined broker+controller processes.

    ``port`` is the first node's client port (others are free ports). ``log_dir`` keeps the
    nodes' folders (config, ``server.log``, data) there; without it a temporary folder is
    removed at ``stop()``. ``sasl_users`` ({name: password}) makes the client listeners
    SASL_PLAINTEXT with SCRAM-SHA-256/512 users created at format time. ``tls`` makes them speak
    TLS (SASL_SSL with users, else SSL) with a test CA and broker certificate made at start in
    the cluster's folder (``ca_file``: what clients trust). ``authorizer`` turns on the standard
    authorizer with no ACL meaning no access: the first SASL user (the one ``client_config()``
    and ``admin()`` log in as) is a super user, and so are the brokers themselves on their
    PLAINTEXT inter-broker and controller listeners; the others get only what ACLs grant.
    ``extra_config`` is added to every node's ``server.properties``. The defaults (no TLS, no
    authorizer) render exactly the configuration they always did."""

    def __init__(
        self,
        nodes: int = 1,
        port: int | None = None,
        log_dir: Path | str | None = None,
        sasl_users: Mapping[str, str] | None = None,
        extra_config: Mapping[str, object] | None = None,
        tls: bool = False,
        authorizer: bool = False,
    ):
        if nodes < 1:
            raise BrokerError("an Apache Kafka cluster needs at least one node")
        if authorizer and not sasl_users:
            raise BrokerError(
                "the authorizer needs SASL users (an admin as the first, then the principals "
                "the ACLs name); without them every client is ANONYMOUS, a super user"
            )
        self.sasl_users = dict(sasl_users or {})
        self.tls = tls
        self.tls_files: TlsFiles | None = None
        self.authorizer = authorizer
        self.extra_config = dict(extra_config or {})
        self.keep_dir = log_dir is not None
        self.base = Path(log_dir) if log_dir is not None else None
        self.cluster_id = cfg.new_cluster_id()
        self.node_count = nodes
        self.first_port = port
        self.nodes: list[cfg.Node] = []
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self.java = ""
        self.jars = Path()

    # --- addresses and client settings --------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ca_file(self) -> Path | None:
        """The test CA (PEM) clients must trust when the cluster speaks TLS, else None."""
        return self.tls_files.ca_file if self.tls_files is not None else None

    @property
    def admin_user(self) -> str | None:
        """The super user the admin client logs in as when the authorizer is on."""
        return next(iter(self.sasl_users)) if self.authorizer else None

    def client_config(self) -> dict[str, Any]:
        """confluent-kafka settings reaching this cluster (as the first SASL user, if any,
        trusting the test CA when it speaks TLS)."""
        return cfg.client_config(self.bootstrap, self.sasl_users, self.ca_file)

    def admin(self) -> AdminClient:
        conf: dict[str, Any] = {**self.client_config(), "logger": ProbeLogger()}
        return AdminClient(conf)

    # --- lifecycle -----------------------------------------------------------------------------
    def _plan(self) -> None:
        if self.base is None:
            self.base = Path(tempfile.mkdtemp(prefix="fraudstream-kafka-"))
        ports = [self.first_port or free_port()] + [free_port() for _ in range(self.node_count - 1)]
        self.nodes = [
            cfg.Node(
                node_id=i,
                port=ports[i],
                controller_port=free_port(),
                directory=self.base / f"node-{i}",
                internal_port=free_port() if self.sasl_users or self.tls else None,
            )
            for i in range(self.node_count)
        ]

    def _check_ports_free(self) -> None:
        for node in self.nodes:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", node.port))
                except OSError as exc:
                    raise BrokerError(
                        f"cannot start Apache Kafka on 127.0.0.1:{node.port}: the port is in use "
                        f"({exc.strerror}); choose another with --port"
                    ) from None

    def _write_configs(self) -> None:
        assert self.base is not None
        if self.tls:
            self.tls_files = make_test_tls(self.base / "tls")
        tls = self.tls_files.server_properties() if self.tls_files is not None else None
        supers = [f"User:{self.admin_user}"] if self.admin_user is not None else None
        for i, node in enumerate(self.nodes):
            node.directory.mkdir(parents=True, exist_ok=True)
            props = cfg.server_properties(
                self.nodes, i, bool(self.sasl_users), self.extra_config, tls, supers
            )
            node.properties_file.write_text(cfg.render_properties(props))
            node.log4j_file.write_text(cfg.render_log4j(node.log_file))

    def _format(self) -> None:
        """``StorageTool format`` every node's log dir, in parallel (each is a JVM start)."""
        procs = []
        for node in self.nodes:
            earlier = cfg.formatted_cluster_id(node.data_dir)
            if earlier is not None:  # formatted by an earlier run in the same log_dir
                self.cluster_id = earlier
                continue
            args = ["format", "-t", self.cluster_id, "-c", str(node.properties_file)]
            args += cfg.scram_arguments(self.sasl_users)
            cmd = cfg.java_command(
                self.java, self.jars, "kafka.tools.StorageTool", args, node.log4j_file
            )
            procs.append(
                (node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            )
        for node, proc in procs:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise BrokerError(
                    f"formatting Kafka node {node.node_id} failed (exit {proc.returncode}): "
                    f"{cfg.java_failure(out.decode(errors='replace'))}"
                )

    def start(self) -> ApacheKafka:
        self.java = require_java()
        self.jars = fetch_jars()
        started = time.monotonic()
        self._plan()
        try:
            self._check_ports_free()
            self._write_configs()
            self._format()
            for i in range(self.node_count):
                self._spawn(i)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info(
            "Apache Kafka %s, %d node(s), ready on %s in %.1fs",
            cfg.KAFKA_VERSION, self.node_count, self.bootstrap, time.monotonic() - started,
        )  # fmt: skip
        return self

    def _spawn(self, i: int) -> None:
        node = self.nodes[i]
        cmd = cfg.java_command(
            self.java, self.jars, "kafka.Kafka", [str(node.properties_file)], node.log4j_file
        )
        with open(node.directory / "stdout.log", "ab") as out:
            self.processes[i] = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=node.directory,
                preexec_fn=_die_with_parent,
            )

    def _failure(self, i: int, why: str) -> BrokerError:
        node = self.nodes[i]
        tail = ""
        for path in (node.log_file, node.directory / "stdout.log"):
            if path.is_file():
                errors = [
                    ln for ln in path.read_text(errors="replace").splitlines()
                    if " ERROR " in ln or "Exception" in ln
                ]  # fmt: skip
                if errors:
                    tail = f"; last error in {path}: {errors[-1][:300]}"
                    break
        return BrokerError(f"Apache Kafka node {node.node_id} {why}{tail}")

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every running node's client port accepts TCP and the cluster's metadata lists
        all of them as brokers; BrokerError if a node exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        running = [i for i, p in enumerate(self.processes) if p is not None]
        waiting = set(running)
        while waiting:
            for i in list(waiting):
                proc = self.processes[i]
                assert proc is not None
                if proc.poll() is not None:
                    raise self._failure(i, f"exited at start (exit code {proc.returncode})")
                if _port_open(self.nodes[i].port):
                    waiting.discard(i)
            if time.monotonic() >= deadline:
                raise self._failure(min(waiting), f"did not listen within {timeout_s:.0f}s")
            if waiting:
                time.sleep(0.1)
        admin = self.admin()
        while True:
            try:
                seen = set(admin.list_topics(timeout=2.0).brokers)
                if seen >= set(running):
                    return
            except Exception:  # KafkaException while the cluster settles
                pass
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"Apache Kafka on {self.bootstrap}: metadata did not list nodes {running} "
                    f"within {timeout_s:.0f}s"
                )
            time.sleep(0.2)

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i`` (no controlled shutdown), and wait for it to be gone."""
        proc, self.processes[i] = self.processes[i], None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    def stop_node(self, i: int, timeout_s: float = 30.0) -> None:
        """SIGTERM node ``i`` (a controlled shutdown: it hands its leaderships over first),
        SIGKILL it if it is still there after ``timeout_s``; wait for it to be gone."""
        proc, self.processes[i] = self.processes[i], None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)

    def start_node(self, i: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """(Re)start node ``i`` with its existing data and wait until the cluster lists it."""
        self.start_nodes([i], timeout_s)

    def start_nodes(self, nodes: list[int], timeout_s: float = START_TIMEOUT_S) -> None:
        """(Re)start the stopped ones of ``nodes`` together (their JVMs start in parallel) and
        wait until the cluster lists every running node."""
        stopped = [i for i in nodes if self.node_pids[i] is None]
        if not stopped:
            return
        for i in stopped:
            self._spawn(i)
        self.wait_ready(timeout_s)

    @property
    def node_pids(self) -> list[int | None]:
        return [p.pid if p is not None and p.poll() is None else None for p in self.processes]

    def leader_counts(self, topic: str) -> dict[int, int]:
        """Node id -> how many of ``topic``'s partitions it leads (-1: partitions without a
        leader), as the cluster's metadata says now."""
        meta = self.admin().list_topics(topic, timeout=10).topics[topic]
        counts: dict[int, int] = {}
        for partition in meta.partitions.values():
            counts[partition.leader] = counts.get(partition.leader, 0) + 1
        return counts

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every node at once (a clean shutdown), SIGKILL what is left after
        ``timeout_s``; the temporary folder is then removed."""
        procs = [p for p in self.processes if p is not None and p.poll() is None]
        self.processes = [None] * self.node_count
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if not self.keep_dir and self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)

    def wait(self) -> None:
        """Block until every node has exited."""
        for proc in list(self.processes):
            if proc is not None:
                proc.wait()

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
