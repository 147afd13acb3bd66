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
    "the 4 folds, stage 2 trained on the rows stage 1 forwarded (docs/evaluation.md). Card "
    "median: the amount against the card's 30-day median, its payments at >= 1.5x, 2x, 3x its "
    "median in 3 and 14 days and the largest such ratio. Terminal run: the terminal's run of "
    "known frauds, the days it spans, the days since its latest known fraud. Fraud origin: the "
    "amount of the terminal's latest known fraud and its card's known frauds in the 30 days "
    "before it (a terminal compromise, or a card compromised elsewhere)."
)

# measured 2026-12-07 08:14-08:53 (Intel Xeon; the default search, stage 2 trained on the rows
# stage 1 forwarded, 56-day windows); "all" adds the project's earlier extras (card mean ratio,
# time since last, 1-hour count, new terminal, the terminal's known frauds in 30 days)
FAMILY_ABLATION: list[dict[str, Any]] = [
    {
        "features": "handbook 15",
        "count": 15,
        "average_precision": 0.720,
        "auc_roc": 0.882,
        "card_precision_at_100": 0.308,
    },
    {
        "features": "handbook + card median",
        "count": 23,
        "average_precision": 0.734,
        "auc_roc": 0.883,
        "card_precision_at_100": 0.312,
    },
    {
        "features": "handbook + terminal run",
        "count": 18,
        "average_precision": 0.732,
        "auc_roc": 0.882,
        "card_precision_at_100": 0.305,
    },
    {
        "features": "handbook + card median + terminal run",
        "count": 26,
        "average_precision": 0.747,
        "auc_roc": 0.883,
        "card_precision_at_100": 0.311,
    },
    {
        "features": "handbook + the three families (+ fraud origin)",
        "count": 28,
        "average_precision": 0.755,
        "auc_roc": 0.883,
        "card_precision_at_100": 0.311,
    },
    {
        "features": "all (the three families and the earlier extras)",
        "count": 33,
        "average_precision": 0.755,
        "auc_roc": 0.883,
        "card_precision_at_100": 0.311,
    },
]
