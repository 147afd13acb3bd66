"""Stage-2 retry and dead-letter routing, with recording stand-ins for the faust topics."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from streams.settings import Settings
from streams.stage2.failures import RETRY_BASE_S, Failures, flagged_source
from streams.stage2.stats import Stage2Stats


class Topic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


def _event(headers: list[tuple[str, bytes]], partition: int = 2, offset: int = 41) -> Any:
    message = SimpleNamespace(
        key=b"card-7",
        value=b'{"transaction_id": "t1"}',
        headers=headers,
        partition=partition,
        offset=offset,
        timestamp=1_700_000_000.5,
    )
    return SimpleNamespace(message=message)


def _failures(max_attempts: int = 3) -> tuple[Failures, list[Topic], Topic, Stage2Stats]:
    settings = Settings(bootstrap_servers="x:1", stage2_max_attempts=max_attempts)
    retries = [Topic() for _ in range(max_attempts - 1)]
    dlq = Topic()
    stats = Stage2Stats()
    return Failures(settings, retries, dlq, stats), retries, dlq, stats


def test_first_failure_goes_to_the_first_retry_topic_in_event_time():
    failures, retries, dlq, stats = _failures()
    before = int(time.time() * 1000)
    asyncio.run(failures.retry_or_dead(_event([("sent_ms", b"123")]), 1, "boom"))
    (sent,) = retries[0].sent
    headers = dict(sent["headers"])
    assert headers["sent_ms"] == b"123"  # carried
    assert headers["retry.attempt"] == b"1"
    assert (headers["retry.source.partition"], headers["retry.source.offset"]) == (b"2", b"41")
    assert int(headers["retry.at.ms"]) >= before + RETRY_BASE_S * 1000
    assert sent["timestamp"] == 1_700_000_000.5 and sent["value"] == b'{"transaction_id": "t1"}'
    assert (stats.dead_letters, stats.retried) == (0, 1) and not dlq.sent and not retries[1].sent


def test_last_attempt_goes_to_the_dead_letter_topic_with_the_flagged_position():
    failures, retries, dlq, stats = _failures()
    retried = _event(
        [
            ("sent_ms", b"123"),
            ("retry.attempt", b"2"),
            ("retry.first.ms", b"1000"),
            ("retry.source.partition", b"3"),
            ("retry.source.offset", b"99"),
            ("retry.source.timestamp", b"1699999999000"),
        ],
        partition=0,
        offset=5,
    )
    assert flagged_source(retried) == ("3", "99", "1699999999000")
    asyncio.run(failures.retry_or_dead(retried, 3, "still failing"))
    (sent,) = dlq.sent
    headers = dict(sent["headers"])
    assert not any(k.startswith("retry.") for k in headers)
    assert headers["dlq.source.partition"] == b"3" and headers["dlq.source.offset"] == b"99"
    assert headers["dlq.error.kind"] == b"transient"
    assert headers["dlq.error.message"] == b"still failing"
    assert headers["dlq.attempts"] == b"3" and headers["dlq.first.failure.ms"] == b"1000"
    assert sent["key"] == b"card-7" and (stats.dead_letters, stats.retried) == (1, 0)
    assert not any(t.sent for t in retries)
