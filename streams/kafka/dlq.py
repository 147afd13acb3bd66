"""Dead letters: the original key, value and headers byte for byte, plus why and where.

Added headers (all UTF-8 strings): ``dlq.source.topic``, ``dlq.source.partition``,
``dlq.source.offset``, ``dlq.source.timestamp``, ``dlq.stage``, ``dlq.error.kind``,
``dlq.error.message``, ``dlq.attempts``, ``dlq.first.failure.ms``, ``dlq.last.failure.ms``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

PREFIX = "dlq."
Headers = list[tuple[str, Any]]


class MessageLike(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> Any: ...
    def value(self) -> Any: ...
    def headers(self) -> Any: ...


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: Headers


def header_dict(headers: Any) -> dict[str, str]:
    """Kafka headers (a list of pairs or a mapping, values bytes or str) as text."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    out: dict[str, str] = {}
    for name, value in items:
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return out


def header(msg: Any, name: str) -> str | None:
    """One header of a confluent-kafka message as text, or None."""
    for key, value in msg.headers() or []:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def dead_letter(msg: MessageLike, stage: str, kind: str, message: str) -> DeadLetter:
    """Wrap a failed message; an earlier failure's attempt count and first time carry over."""
    original: Headers = list(msg.headers() or [])
    previous = header_dict(original)
    now = str(int(time.time() * 1000))
    attempts = int(previous.get(PREFIX + "attempts", "0")) + 1
    kept = [(k, v) for k, v in original if not k.startswith(PREFIX)]
    added = {
        "source.topic": previous.get(PREFIX + "source.topic", msg.topic() or ""),
        "source.partition": previous.get(PREFIX + "source.partition", str(msg.partition())),
        "source.offset": previous.get(PREFIX + "source.offset", str(msg.offset())),
        "source.timestamp": previous.get(PREFIX + "source.timestamp", str(msg.timestamp()[1])),
        "stage": stage,
        "error.kind": kind,
        "error.message": message[:1000],
        "attempts": str(attempts),
        "first.failure.ms": previous.get(PREFIX + "first.failure.ms", now),
        "last.failure.ms": now,
    }
    headers = kept + [(PREFIX + k, v.encode()) for k, v in added.items()]
    return DeadLetter(msg.key(), msg.value(), headers)


def original_headers(headers: Headers | None) -> Headers:
    """The headers a message had before it became a dead letter (for redrive)."""
    return [(k, v) for k, v in headers or [] if not k.startswith(PREFIX)]
