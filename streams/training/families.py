"""The feature families' measured contribution, shown in every model card.

Measured with ``fraudstream evaluate --protocol handbook-ch5 --features SET`` on the handbook's
data (DATA.md; two-stage, mean of the 4 folds, each fold's model from the search of
``streams.training.search``); the sets are ``streams.features.names.FEATURE_SETS``. Re-measure
and update after a change to the features or the search (docs/evaluation.md has the commands).
"""

from __future__ import annotations

from typing import Any

FAMILY_NOTE = (
    "Two-stage `evaluate --protocol handbook-ch5 --features SET` on the handbook's data, mean of "
    "the 4 folds (docs/evaluation.md). Card median: the amount against the card's 30-day "
    "median, its payments at >= 2x its median in 14 days and the largest such ratio. Terminal "
    "run: the terminal's run of known frauds, the days it spans, the days since its latest "
    "known fraud."
)

FAMILY_ABLATION: list[dict[str, Any]] = []
