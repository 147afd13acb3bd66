"""What a stage-1 worker has done so far (read by the CLI, the benchmark and tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stage1Stats:
    consumed: int = 0
    flagged: int = 0
    approved: int = 0
    dead_letters: int = 0
    labels: int = 0
    label_wait_timeouts: int = 0
    late_labels: int = 0  # offered after their publication time had been screened
    batches: int = 0
    assigned: list[int] = field(default_factory=list)
    rebuilt: dict[int, int] = field(default_factory=dict)  # partition -> records replayed
    restored: dict[int, int] = field(default_factory=dict)  # partition -> checkpoint offset
    rewinds: int = 0
    outages: int = 0
