"""What a crash test found, from the records a downstream reader saw (pure; no Kafka here).

* **lost**: a transaction sent and never decided; **lost after forwarding**: of those, the ones
  that reached the flagged topic (stage 2 took them and gave no decision).
* **duplicates**: decision records beyond the first of their transaction (at-least-once), and
  by the stage that wrote them (``duplicates_by_stage``; a few ids in ``examples``).
* **conflicting**: transactions whose decisions differ in action, stage or score;
  ``differing_bytes`` counts those whose bytes differ at all, and ``differing_fields`` says in
  which fields (``card_context.flags_30d``: a key of a nested object).
* **dead letters**: distinct source positions of dead letters, and the extra copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


@dataclass
class Verdict:
    transactions: int = 0
    decisions: int = 0
    lost: int = 0
    lost_after_forwarding: int = 0
    duplicates: int = 0
    duplicates_by_stage: dict[str, int] = field(default_factory=dict)  # by the first copy's
    conflicting: int = 0
    conflicting_action: int = 0
    conflicting_stage: int = 0
    conflicting_score: int = 0
    differing_bytes: int = 0
    differing_fields: dict[str, int] = field(default_factory=dict)
    poison_sent: int = 0
    dead_letters: int = 0
    dead_letter_copies: int = 0
    examples: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """No lost decision, no duplicate that differs in any byte, one dead letter per
        poisoned message."""
        return (
            self.lost == 0 and self.differing_bytes == 0 and self.dead_letters == self.poison_sent
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def judge(
    expected: set[str],
    decisions: Iterable[bytes],
    forwarded: set[str],
    dead_letter_sources: Iterable[tuple[str, str, str]],
    poison_sent: int,
) -> Verdict:
    """``expected``: the transaction ids sent; ``decisions``: every decision value read;
    ``forwarded``: ids seen on the flagged topic; ``dead_letter_sources``: (topic, partition,
    offset) of each dead letter read."""
    by_tid: dict[str, list[bytes]] = {}
    n = 0
    for value in decisions:
        n += 1
        tid = str(orjson.loads(value)["transaction_id"])
        by_tid.setdefault(tid, []).append(value)
    v = Verdict(transactions=len(expected), decisions=n, poison_sent=poison_sent)
    missing = expected - set(by_tid)
    v.lost = len(missing)
    v.lost_after_forwarding = len(missing & forwarded)
    examples: dict[str, Any] = {}
    if missing:
        examples["lost"] = sorted(missing)[:5]
    for tid, values in by_tid.items():
        v.duplicates += len(values) - 1
        if len(values) > 1:  # which stage wrote them: what a failed exactly-once run asks first
            stage = str(orjson.loads(values[0]).get("stage"))
            v.duplicates_by_stage[stage] = v.duplicates_by_stage.get(stage, 0) + len(values) - 1
            duplicated = examples.setdefault("duplicated", [])
            if len(duplicated) < 5:
                duplicated.append(tid)
        if len(values) == 1 or len(set(values)) == 1:
            continue
        v.differing_bytes += 1
        parsed = [orjson.loads(x) for x in dict.fromkeys(values)]  # the distinct values
        examples.setdefault("differing", [p for p in parsed[:2]])
        for name in _differing_fields(parsed):
            v.differing_fields[name] = v.differing_fields.get(name, 0) + 1
        fields = {
            name: len({orjson.dumps(p.get(name)) for p in parsed}) > 1
            for name in ("action", "stage", "score")
        }
        if any(fields.values()):
            v.conflicting += 1
            v.conflicting_action += fields["action"]
            v.conflicting_stage += fields["stage"]
            v.conflicting_score += fields["score"]
            examples.setdefault("conflicting", [p for p in parsed[:2]])
    sources = list(dead_letter_sources)
    v.dead_letters = len(set(sources))
    v.dead_letter_copies = len(sources) - v.dead_letters
    v.examples = examples or None
    return v


def _differing_fields(values: list[dict[str, Any]]) -> list[str]:
    """The fields in which ``values`` (decisions of one transaction) are not all equal; a nested
    object's differing keys as ``field.key``."""
    out = []
    for name in sorted({k for v in values for k in v}):
        seen = [v.get(name) for v in values]
        if all(x == seen[0] for x in seen):
            continue
        if all(isinstance(x, dict) for x in seen):
            out += [f"{name}.{k}" for k in _differing_fields([dict(x or {}) for x in seen])]
        else:
            out.append(name)
    return out
