"""The one logging setup: plain or JSON lines on stderr.

Log lines about a message name it as ``topic[partition]@offset`` and its transaction id; card
ids are pseudonymised when a key is configured, and no secret is ever formatted into a line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("topic", "partition", "offset", "transaction_id", "error_kind"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload).decode()


def setup_logging(level: str = "INFO", fmt: str = "plain") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "kafka", "librdkafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def where(topic: str | None, partition: int | None, offset: int | None) -> str:
    """``topic[partition]@offset``, the way every log line names a message."""
    return f"{topic}[{partition}]@{offset}"
