"""Broker outages and graceful shutdown of the stage-1 worker.

Outage: an embedded broker of this test's own, advertised behind a TCP proxy that the test can
cut (every connection closed, new ones refused) and restore, so the broker keeps its data while
the worker cannot reach it: at start, and in the middle of a run.

Shutdown: SIGTERM finishes the batch, flushes, commits and leaves the group, so a restart
redoes nothing: not a single duplicate output.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import TopicPartition

from streams.data.produce import produce_history
from streams.kafka import clients
from streams.kafka.embedded import _die_with_parent, broker_binary, free_port, wait_until_ready
from streams.kafka.topics import create_topics
from streams.observability import metrics as m
from streams.stage1.worker import Stage1Worker
from tests.integration.recovery_support import (
    Tail,
    Worker,
    history,
    ids,
    recovery_settings,
    traffic,
)
from tests.support import isolated_settings

pytestmark = pytest.mark.integration


class Proxy:
    """127.0.0.1:port -> 127.0.0.1:target; ``cut()`` drops every connection and refuses new
    ones until ``restore()``."""

    def __init__(self, target: int):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.server.close()


@contextlib.contextmanager
def proxied_broker() -> Iterator[tuple[str, Proxy]]:
    """A Tansu broker that advertises the proxy's address: every client goes through it."""
    port = free_port()
    proxy = Proxy(port)
    listen, advertised = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{proxy.port}"
    cmd = [broker_binary(), "broker", "--listener-url", listen, "--advertised-listener-url"]
    proc = subprocess.Popen(
        [*cmd, advertised],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        wait_until_ready(f"127.0.0.1:{proxy.port}")
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.close()
        proc.terminate()
        proc.wait(10)


def _broker_up() -> float:
    return float(m.BROKER_UP.labels("stage1")._value.get())


def _stage1_ids(tail: Tail, settings) -> list[str]:
    values = tail.values(settings.topic_decisions) + tail.values(settings.topic_flagged)
    return [str(orjson.loads(v)["transaction_id"]) for v in values]


def _wait_ids(tail: Tail, settings, expected: set[str], timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    got = _stage1_ids(tail, settings)
    while not expected <= set(got) and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _stage1_ids(tail, settings)
    return got


@pytest.mark.timeout(180)
def test_broker_unreachable_at_start_and_during_a_run(caplog, capsys):
    caplog.set_level(logging.INFO)
    with proxied_broker() as (bootstrap, proxy):
        settings = isolated_settings(bootstrap, session_timeout_ms=3000)
        create_topics(settings)
        df = history(customers=120, days=15, seed=71)
        first, second = df.head(df.height // 2), df.tail(df.height - df.height // 2)
        produce_history(first, settings)

        proxy.cut()  # 1. unreachable at start: the worker waits, says so, and carries on
        worker = Stage1Worker(settings)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        time.sleep(2.5)
        assert thread.is_alive() and not worker.stats.assigned
        assert _broker_up() == 0.0
        assert "not reachable yet" in caplog.text
        proxy.restore()
        with Tail(settings, [settings.topic_decisions, settings.topic_flagged]) as tail:
            got = _wait_ids(tail, settings, ids(first), 60)
            assert ids(first) <= set(got), "the worker did not carry on after the broker came"

            # 2. unreachable mid-run, while transactions flow
            seen_down = False
            with traffic(settings, second, rate=1000):
                time.sleep(1.0)
                proxy.cut()
                cut_at = len(_stage1_ids(tail, settings))
                deadline = time.monotonic() + 4.0  # > the 3 s session: evicted, rejoins
                while time.monotonic() < deadline:
                    seen_down |= _broker_up() == 0.0
                    time.sleep(0.1)
                proxy.restore()
            got = _wait_ids(tail, settings, ids(df), 90)
        worker.stop_event.set()
        thread.join(30)
    assert ids(df) <= set(got), f"{len(ids(df) - set(got))} transactions lost in the outage"
    outputs: dict[str, set[bytes]] = {}
    for v in tail.values(settings.topic_decisions) + tail.values(settings.topic_flagged):
        outputs.setdefault(str(orjson.loads(v)["transaction_id"]), set()).add(v)
    assert all(len(v) == 1 for v in outputs.values()), "an output redone with other content"
    assert seen_down, "fraudstream_broker_up never went to 0 during the outage"
    assert _broker_up() == 1.0
    # the start outage is always counted; the mid-run one is asserted through the metric above
    # (seen_down): on a loaded machine the worker may only see it as a slow broker, not a loss
    assert worker.stats.outages >= 1
    assert "broker reachable again" in caplog.text
    with capsys.disabled():
        print(
            f"\noutage: {df.height} transactions, outages seen {worker.stats.outages}, "
            f"cut at {cut_at} outputs; {len(got)} stage-1 outputs "
            f"({len(got) - len(set(got))} redone after the outage)"
        )


@pytest.mark.timeout(180)
def test_sigterm_finishes_commits_and_leaves(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(kafka_broker)
    create_topics(settings)
    df = history(customers=150, days=15, seed=72)  # ~4k, 4 s of traffic
    stage1 = Worker("stage1", settings, tmp_path).start()
    stage1.wait_log("assigned")
    with (
        Tail(settings, [settings.topic_decisions, settings.topic_flagged]) as tail,
        traffic(settings, df, rate=1000),
    ):
        while len(_stage1_ids(tail, settings)) < 1500:
            time.sleep(0.05)
        stage1.proc.send_signal(signal.SIGTERM)
        assert stage1.proc.wait(30) == 0, stage1.log()[-3000:]
        log = stage1.log()
        assert "finishing the batch and stopping" in log and "stage 1 stopped" in log
        stopped_at = len(_stage1_ids(tail, settings))
        assert stopped_at < df.height, "the traffic was over before the SIGTERM"

        consumer = clients.consumer(settings, settings.stage1_group)
        parts = [TopicPartition(settings.topic_transactions, p) for p in range(2)]
        committed = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
        consumer.close()
        time.sleep(1.0)
        assert committed == len(_stage1_ids(tail, settings)), "outputs not covered by offsets"

        restarted = time.monotonic()
        stage1.start().wait_log("assigned")
        joined_s = time.monotonic() - restarted
        got = _wait_ids(tail, settings, ids(df), 90)
        assert stage1.stop() == 0
    assert set(got) == ids(df)
    assert len(got) == len(ids(df)), f"{len(got) - len(ids(df))} outputs redone after SIGTERM"
    with capsys.disabled():
        print(
            f"\nSIGTERM: stopped after {stopped_at} outputs with {committed} offsets committed; "
            f"restart assigned in {joined_s:.1f}s (left the group, no session timeout to wait); "
            f"{len(got)} outputs for {df.height} transactions, no duplicate"
        )
