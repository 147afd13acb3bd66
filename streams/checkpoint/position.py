"""Where a labels consumer stands (saved in a checkpoint's labels state)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LabelsPosition:
    """Per labels partition: the next offset to read and the publication time of the last
    label read (``LabelFeed.time``)."""

    offsets: dict[int, int] = field(default_factory=dict)
    times: dict[int, int] = field(default_factory=dict)
