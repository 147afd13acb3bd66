"""``fraudstream dlq inspect``: what is in the dead-letter topics, counted and sampled.

Counts by stage and error kind, by age (time since the last failure), by source topic, how many
were already redriven (``<dlq>.redriven``, see ``streams.recovery.redrive``), and a few samples
per error kind. Rendered as rich tables, or returned as plain data for ``--json``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.kafka.dlq import PREFIX, header_dict
from streams.recovery.reader import read_topic
from streams.recovery.redrive import marker_topic, redriven_offsets
from streams.settings import Settings

AGE_BUCKETS: list[tuple[str, int]] = [
    ("< 1 h", 3_600_000),
    ("1 h – 1 d", 86_400_000),
    ("1 d – 7 d", 7 * 86_400_000),
    ("> 7 d", 2**62),
]


def age_bucket(age_ms: int) -> str:
    for name, limit in AGE_BUCKETS:
        if age_ms < limit:
            return name
    return AGE_BUCKETS[-1][0]


def failure_ms(headers: dict[str, str], record_ts: int) -> int:
    """When a dead letter last failed (its header), or its record timestamp."""
    value = headers.get(PREFIX + "last.failure.ms", "")
    return int(value) if value.isdigit() else record_ts


def preview(value: bytes | None, width: int = 60) -> str:
    if value is None:
        return "(null)"
    text = value[:width].decode("utf-8", "backslashreplace")
    return text + ("…" if len(value) > width else "")


@dataclass
class DlqSummary:
    topic: str
    total: int = 0
    redriven: int = 0
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, kind)
    by_age: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "total": self.total,
            "redriven": self.redriven,
            "by_kind": [
                {"stage": stage, "kind": kind, "count": n}
                for (stage, kind), n in sorted(self.by_kind.items())
            ],
            "by_age": {name: self.by_age.get(name, 0) for name, _ in AGE_BUCKETS},
            "by_source": dict(self.by_source),
            "truncated": self.truncated,
            "samples": self.samples,
        }


def inspect_dlq(
    settings: Settings, topic: str, samples: int = 3, now_ms: int | None = None
) -> DlqSummary:
    """Read ``topic`` from the beginning and summarise it."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    done = redriven_offsets(settings, topic)
    summary = DlqSummary(topic)
    per_kind: Counter[str] = Counter()
    for msg in read_topic(settings, topic, idle_timeout_s=5.0, missing_ok=True):
        h = header_dict(msg.headers())
        stage = h.get(PREFIX + "stage", "?")
        kind = h.get(PREFIX + "error.kind", "?")
        failed = failure_ms(h, msg.timestamp()[1])
        summary.total += 1
        summary.by_kind[(stage, kind)] += 1
        summary.by_age[age_bucket(max(now - failed, 0))] += 1
        summary.by_source[h.get(PREFIX + "source.topic", "?")] += 1
        summary.redriven += (msg.partition(), msg.offset()) in done
        summary.truncated += PREFIX + "value.truncated" in h
        if per_kind[kind] < samples:
            per_kind[kind] += 1
            summary.samples.append(
                {
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "stage": stage,
                    "kind": kind,
                    "attempts": h.get(PREFIX + "attempts"),
                    "source": "{}[{}]@{}".format(
                        *(h.get(PREFIX + "source." + k) for k in ("topic", "partition", "offset"))
                    ),
                    "age_s": round(max(now - failed, 0) / 1000, 1),
                    "message": h.get(PREFIX + "error.message", "")[:200],
                    "bytes": len(msg.value() or b""),
                    "value": preview(msg.value()),
                }
            )
    return summary


def render(summaries: list[DlqSummary], console: Console | None = None) -> None:
    """The summaries as rich tables."""
    console = console or Console()
    for s in summaries:
        title = f"{s.topic}: {s.total} dead letters, {s.redriven} redriven"
        if s.truncated:
            title += f", {s.truncated} truncated"
        counts = Table(title=title, title_justify="left")
        counts.add_column("stage")
        counts.add_column("error kind")
        counts.add_column("count", justify="right")
        for (stage, kind), n in sorted(s.by_kind.items(), key=lambda x: -x[1]):
            counts.add_row(stage, kind, str(n))
        console.print(counts)
        if not s.total:
            continue
        ages = Table(title="by age (since last failure)", title_justify="left")
        for name, _ in AGE_BUCKETS:
            ages.add_column(name, justify="right")
        ages.add_row(*(str(s.by_age.get(name, 0)) for name, _ in AGE_BUCKETS))
        console.print(ages)
        sample = Table(
            title=f"samples (redrive markers in {marker_topic(s.topic)})", title_justify="left"
        )
        for column in ("partition", "offset", "kind", "source", "age_s", "message", "value"):
            sample.add_column(column, overflow="fold")
        for row in s.samples:
            sample.add_row(
                str(row["partition"]),
                str(row["offset"]),
                row["kind"],
                row["source"],
                str(row["age_s"]),
                row["message"],
                row["value"],
            )
        console.print(sample)
