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
    "before it (a terminal compromise, or a card compromised elsewhere). Card compromise: the "
    "log posterior odds that the card is compromised and this payment is the compromise's, "
    "from its amounts since a compromise may have begun. Stage 1 uses every feature in each row."
)

# measured 2026-12-08 02:35-02:47 (Intel Xeon; the default search, stage 2 trained on the rows
# stage 1 forwarded, 56-day windows; stage 1 with every feature and the posterior's percentile
# ranking); "all" adds the project's earlier extras (card mean ratio, time since last, 1-hour
# count, new terminal, the terminal's known frauds in 30 days)
FAMILY_ABLATION: list[dict[str, Any]] = [
    {
        "features": "handbook 15",
        "count": 15,
        "average_precision": 0.719,
        "auc_roc": 0.885,
        "card_precision_at_100": 0.304,
    },
    {
        "features": "handbook + card median",
        "count": 23,
        "average_precision": 0.736,
        "auc_roc": 0.885,
        "card_precision_at_100": 0.311,
    },
    {
        "features": "handbook + terminal run",
        "count": 18,
        "average_precision": 0.735,
        "auc_roc": 0.885,
        "card_precision_at_100": 0.306,
    },
    {
        "features": "handbook + card median + terminal run",
        "count": 26,
        "average_precision": 0.748,
        "auc_roc": 0.885,
        "card_precision_at_100": 0.310,
    },
    {
        "features": "handbook + card median + terminal run + fraud origin",
        "count": 28,
        "average_precision": 0.754,
        "auc_roc": 0.886,
        "card_precision_at_100": 0.311,
    },
    {
        "features": "handbook + the four families (+ card compromise)",
        "count": 29,
        "average_precision": 0.756,
        "auc_roc": 0.886,
        "card_precision_at_100": 0.310,
    },
    {
        "features": "all (the four families and the earlier extras)",
        "count": 34,
        "average_precision": 0.753,
        "auc_roc": 0.886,
        "card_precision_at_100": 0.311,
    },
]
