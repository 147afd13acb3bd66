"""A thread that reads topics from their beginning and keeps every record (key, value, headers),
as an independent downstream consumer would see them."""

from __future__ import annotations

import threading
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.kafka import clients
from streams.settings import Settings

Record = tuple[bytes | None, bytes, Any, int, int]
"""key, value, headers, partition, offset"""


class Tail:
    def __init__(self, settings: Settings, topics: list[str], isolation: str = "read_committed"):
        self.settings = settings
        self.topics = topics
        self.isolation = isolation
        self.messages: dict[str, list[Record]] = {t: [] for t in topics}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tail")

    def __enter__(self) -> Tail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = clients.consumer(
            self.settings,
            "tail",
            **{"enable.auto.commit": False, "isolation.level": self.isolation},
        )
        assignment = []
        for topic in self.topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        consumer.assign(assignment)
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=5000, timeout=0.2)
                good = [m for m in msgs if not m.error()]
                if good:
                    with self.lock:
                        for m in good:
                            self.messages[str(m.topic())].append(
                                (
                                    m.key(),
                                    m.value() or b"",
                                    m.headers(),
                                    m.partition() or 0,
                                    m.offset() or 0,
                                )
                            )
        finally:
            consumer.close()

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.messages[topic])

    def values(self, topic: str) -> list[bytes]:
        with self.lock:
            return [r[1] for r in self.messages[topic]]

    def records(self, topic: str) -> list[Record]:
        with self.lock:
            return list(self.messages[topic])

    def stage1_outputs(self, settings: Settings) -> int:
        """Flagged records plus stage-1 decisions seen so far."""
        with self.lock:
            flagged = len(self.messages.get(settings.topic_flagged, []))
            decisions = self.messages.get(settings.topic_decisions, [])
            return flagged + sum(1 for r in decisions if b'"stage":1,' in r[1])

    def positions(self, topic: str, ids: set[str]) -> dict[str, list[tuple[int, int]]]:
        """(partition, offset) of each record of ``topic`` whose transaction id is in ``ids``."""
        out: dict[str, list[tuple[int, int]]] = {}
        for r in self.records(topic):
            tid = str(orjson.loads(r[1])["transaction_id"])
            if tid in ids:
                out.setdefault(tid, []).append((r[3], r[4]))
        return out

    def ids(self, topic: str) -> set[str]:
        """The transaction ids of the records on ``topic`` so far."""
        return {str(orjson.loads(v)["transaction_id"]) for v in self.values(topic)}

    def wait_decided(
        self, topic: str, expected: set[str], timeout_s: float, stop: threading.Event | None = None
    ) -> set[str]:
        """Wait until every expected id has a decision on ``topic``; the ids still missing."""
        import time

        deadline = time.monotonic() + timeout_s
        missing = set(expected)
        seen = 0
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            values = self.values(topic)
            for v in values[seen:]:
                missing.discard(str(orjson.loads(v)["transaction_id"]))
            seen = len(values)
            if not missing:
                break
            time.sleep(0.3)
        return missing
