"""Feature names, in the order every model and file uses them.

The handbook's names are kept exactly (DATA.md); the project's own features sit beside them.
"""

from __future__ import annotations

DAY_MS = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
LABEL_DELAY_DAYS = 7

CARD_FEATURES = [
    name
    for n in WINDOWS_DAYS
    for name in (f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW")
]
TERMINAL_FEATURES = [
    name
    for n in WINDOWS_DAYS
    for name in (f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", f"TERMINAL_ID_RISK_{n}DAY_WINDOW")
]

# The 14 computed handbook features (TX_AMOUNT, the raw input, is the 15th).
HANDBOOK_FEATURES = ["TX_DURING_WEEKEND", "TX_DURING_NIGHT", *CARD_FEATURES, *TERMINAL_FEATURES]

# The project's own features, computed by the same stream code.
EXTRA_FEATURES = [
    "CARD_AMOUNT_RATIO_30DAY",  # amount / mean amount of the card's previous 30 days (1 if none)
    "CARD_SECONDS_SINCE_LAST_TX",  # seconds since the card's previous transaction (30 days if none)
    "CARD_NB_TX_1HOUR_WINDOW",  # the card's transactions in the last hour, this one included
    "CARD_NEW_TERMINAL",  # 1 if the card has not used this terminal in the previous 30 days
    "CARD_AMOUNT_RATIO_MEDIAN_30DAY",  # amount / median amount of the card's previous 30 days
    "CARD_NB_HIGH_RATIO_14DAY",  # previous 14 days' payments at >= 2x the card's median then
    "CARD_MAX_RATIO_14DAY",  # the largest such ratio over the previous 14 days (0 if none)
    "CARD_NB_MID_RATIO_14DAY",  # previous 14 days' payments at >= 1.5x the card's median then
    "CARD_NB_TOP_RATIO_14DAY",  # ... at >= 3x
    "CARD_NB_MID_RATIO_3DAY",  # previous 3 days' payments at >= 1.5x
    "CARD_NB_HIGH_RATIO_3DAY",  # ... at >= 2x
    "CARD_NB_TOP_RATIO_3DAY",  # ... at >= 3x
    "CARD_COMPROMISE_LOGIT",  # log odds: the card is compromised and this payment is the fraud
    "TERMINAL_NB_FRAUD_30DAY_WINDOW",  # known frauds at the terminal, 7-day label delay
    "TERMINAL_FRAUD_RUN",  # the terminal's latest known labels that are all fraud, in a row
    "TERMINAL_FRAUD_RUN_DAYS",  # days that run spans
    "TERMINAL_DAYS_SINCE_FRAUD",  # days from the latest known fraud to now - delay (37 if none)
    "TERMINAL_LAST_FRAUD_AMOUNT",  # the amount of the terminal's latest known fraud (0 if none)
    "TERMINAL_LAST_FRAUD_CARD_FRAUDS",  # its card's known frauds in the 30 days before (-1 if none)
]
CARD_EXTRA = EXTRA_FEATURES[:13]
TERMINAL_EXTRA = EXTRA_FEATURES[13:]

# Everything a model sees, in the order the stream code computes it.
MODEL_FEATURES = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *CARD_FEATURES,
    *CARD_EXTRA,
    *TERMINAL_FEATURES,
    *TERMINAL_EXTRA,
]

# Stage-1 online scores, available to rules and recorded with every flagged transaction.
SCORE_FIELDS = ["ANOMALY_SCORE", "FRAUD_PROBABILITY"]

# What a rule expression may name.
RULE_FIELDS = [*MODEL_FEATURES, *SCORE_FIELDS, "TX_HOUR", "TX_WEEKDAY"]

# Feature families whose contribution ``evaluate --features`` measures (an ablation): each set
# is a subset of MODEL_FEATURES, in its order.
HANDBOOK_15 = ["TX_AMOUNT", *HANDBOOK_FEATURES]
CARD_MEDIAN_FAMILY = [
    "CARD_AMOUNT_RATIO_MEDIAN_30DAY",
    "CARD_NB_HIGH_RATIO_14DAY",
    "CARD_MAX_RATIO_14DAY",
    "CARD_NB_MID_RATIO_14DAY",
    "CARD_NB_TOP_RATIO_14DAY",
    "CARD_NB_MID_RATIO_3DAY",
    "CARD_NB_HIGH_RATIO_3DAY",
    "CARD_NB_TOP_RATIO_3DAY",
]
# "is this card compromised, and is this payment the compromise's?": the evidence of the card's
# amounts summed since a compromise may have begun (``streams.features.card.compromise_logit``)
CARD_COMPROMISE_FAMILY = ["CARD_COMPROMISE_LOGIT"]
TERMINAL_RUN_FAMILY = ["TERMINAL_FRAUD_RUN", "TERMINAL_FRAUD_RUN_DAYS", "TERMINAL_DAYS_SINCE_FRAUD"]
# who the terminal's latest known fraud points at: the terminal, or a card compromised elsewhere
FRAUD_ORIGIN_FAMILY = ["TERMINAL_LAST_FRAUD_AMOUNT", "TERMINAL_LAST_FRAUD_CARD_FRAUDS"]


def _subset(names: list[str]) -> list[str]:
    return [n for n in MODEL_FEATURES if n in set(names)]


FEATURE_SETS: dict[str, list[str]] = {
    "handbook": _subset(HANDBOOK_15),
    "handbook+card-median": _subset([*HANDBOOK_15, *CARD_MEDIAN_FAMILY]),
    "handbook+terminal-run": _subset([*HANDBOOK_15, *TERMINAL_RUN_FAMILY]),
    "handbook+both": _subset([*HANDBOOK_15, *CARD_MEDIAN_FAMILY, *TERMINAL_RUN_FAMILY]),
    "handbook+three": _subset(
        [*HANDBOOK_15, *CARD_MEDIAN_FAMILY, *TERMINAL_RUN_FAMILY, *FRAUD_ORIGIN_FAMILY]
    ),
    "handbook+four": _subset(
        [
            *HANDBOOK_15,
            *CARD_MEDIAN_FAMILY,
            *TERMINAL_RUN_FAMILY,
            *FRAUD_ORIGIN_FAMILY,
            *CARD_COMPROMISE_FAMILY,
        ]
    ),
    "all": list(MODEL_FEATURES),
}
