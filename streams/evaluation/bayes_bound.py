"""The best reachable recall any stage 1 could have on simulated data: a Bayes bound.

On the handbook simulator's data (the handbook's own or ``fraudstream simulate``), a forward
budget can only miss card compromises (scenario 3) once the terminal frauds are reachable: an
amount fraud (scenario 1) is one comparison, and a reachable terminal fraud follows a published
fraud label at its terminal. A card compromise multiplies the amounts of a share of the card's
payments for some days, and nothing else about them differs. So how many of those frauds fit in
a forward budget is limited by how well their amounts stand out.

The oracle here knows what no detector can: the simulator's parameters (the multiplier, the
share, the duration, the compromises drawn per day) and each card's true amount distribution
(the mean of all its genuine payments; the simulator's standard deviation is half the mean, and
it redraws a negative amount uniformly from 0 to twice the mean). For every transaction it
computes the posterior probability that it is a compromise's fraud given the card's payments
before it (a compromise may have started on any of the last ``days`` days) and its own amount.
It puts the amount frauds and the reachable terminal frauds at the top and ranks everything
else by that posterior. Its reachable Recall@K is therefore an upper bound for any detector
that sees the same transactions: no feature set or model can rank the compromised cards' frauds
better than their exact posterior.

``--card-mean past`` takes each card's mean from its earlier payments only (all of them, the
frauds included), as a detector would have to: the gap between the two bounds is what knowing
the true distribution is worth, the rest of the gap to a detector is how it weighs the evidence.

    python -m streams.evaluation.bayes_bound --data FILE --multiplier 5 --share 1/3 \
        --days 14 --cards-per-day 3

prints the bound per fold of the protocol and its mean, for the shares of ``RECALL_AT_SHARES``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from fractions import Fraction
from typing import Any

import numpy as np
import polars as pl

from streams.evaluation.ceiling import HIDDEN, hidden_by_delay, reachable_frauds
from streams.evaluation.handbook_metrics import day_number, remove_known_cards
from streams.evaluation.protocol import folds
from streams.evaluation.stage1_stats import RECALL_AT_SHARES, recall_at_shares
from streams.features.names import DAY_MS

ORACLE = "ORACLE_SCORE"


def _normal_pdf(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _normal_cdf(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return np.asarray(ndtr((x - mean) / sd))


def _genuine_density(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The simulator's amount density: normal (sd = mean / 2), negatives redrawn from
    uniform(0, 2 × mean)."""
    sd = mean / 2
    redrawn = _normal_cdf(np.zeros_like(mean), mean, sd) * ((x >= 0) & (x <= 2 * mean)) / (2 * mean)
    return np.maximum(_normal_pdf(x, mean, sd) + redrawn, 1e-300)


def oracle_scores(
    df: pl.DataFrame,
    multiplier: float,
    share: float,
    days: int,
    cards_per_day: float,
    card_mean: str = "true",
) -> np.ndarray:
    """Per row of ``df`` (the whole history, handbook columns with ``ts_ms`` and
    ``TX_FRAUD_SCENARIO``): 2 for amount frauds and reachable terminal frauds, else the
    posterior probability of a card-compromise fraud (see the module). ``card_mean``: "true"
    (the mean of the card's genuine payments) or "past" (of its earlier payments)."""
    hidden = df[HIDDEN] if HIDDEN in df.columns else hidden_by_delay(df)
    frame = df.select(
        "CUSTOMER_ID", "ts_ms", "TX_AMOUNT", "TX_FRAUD", "TX_FRAUD_SCENARIO", "TERMINAL_ID"
    ).with_columns(hidden, pl.int_range(pl.len()).alias("_row"))
    amount_col = pl.col("TX_AMOUNT")
    if card_mean == "past":  # a card's first payment: its own amount
        earlier = (amount_col.cum_sum() - amount_col) / pl.int_range(pl.len())
        card_means = earlier.over("CUSTOMER_ID").fill_nan(None).fill_null(amount_col)
    else:  # a card without genuine payments: the average amount
        card_means = amount_col.filter(pl.col("TX_FRAUD") == 0).mean().over("CUSTOMER_ID")
        card_means = card_means.fill_null(amount_col.mean())
    frame = frame.sort("CUSTOMER_ID", "ts_ms", "_row").with_columns(card_means.alias("_mean"))
    amount = frame["TX_AMOUNT"].to_numpy().astype(np.float64)
    mean = np.maximum(frame["_mean"].to_numpy(), 1e-6)
    genuine = _genuine_density(amount, mean)
    fraud = _genuine_density(amount / multiplier, mean) / multiplier
    # how much a payment raises the odds that its card is compromised
    evidence = np.log((share * fraud + (1 - share) * genuine) / genuine)
    prior = cards_per_day / frame["CUSTOMER_ID"].n_unique()
    card = frame["CUSTOMER_ID"].to_numpy()
    day = frame["ts_ms"].to_numpy() // DAY_MS
    posterior = np.zeros(frame.height)
    edges = np.flatnonzero(np.r_[True, card[1:] != card[:-1], True])
    for lo, hi in itertools.pairwise(edges.tolist()):
        d = day[lo:hi]
        before = np.r_[0.0, np.cumsum(evidence[lo:hi])]
        own = np.arange(hi - lo)
        odds = np.zeros(hi - lo)
        for back in range(days):  # a compromise that started `back` days before this payment
            first = np.searchsorted(d, d - back, "left")
            odds += np.exp(np.minimum(before[own] - before[first], 700.0))
        compromised = prior * odds / (1 + prior * odds)
        hit = compromised * share * fraud[lo:hi]
        posterior[lo:hi] = hit / (hit + (1 - compromised * share) * genuine[lo:hi])
    scenario = frame["TX_FRAUD_SCENARIO"].to_numpy()
    hidden_rows = frame[HIDDEN].to_numpy()
    posterior[(scenario == 1) | ((scenario == 2) & ~hidden_rows)] = 2.0
    out = np.empty(frame.height)
    out[frame["_row"].to_numpy()] = posterior
    return out


def bound(
    df: pl.DataFrame,
    multiplier: float,
    share: float,
    days: int,
    cards_per_day: float,
    protocol: str = "handbook-ch5",
    card_mean: str = "true",
) -> dict[str, Any]:
    """The oracle's reachable Recall@K on each fold's test week (known cards removed, as
    ``evaluate`` measures stage 1), and the mean over the folds."""
    df = df.with_columns(hidden_by_delay(df))  # once, for the oracle and the reachable frauds
    scored = df.with_columns(
        pl.Series(ORACLE, oracle_scores(df, multiplier, share, days, cards_per_day, card_mean)),
        (pl.col("ts_ms") // DAY_MS).alias("day"),
    )
    first, last = (
        pl.from_epoch(pl.Series([df["ts_ms"].min(), df["ts_ms"].max()]), time_unit="ms")
        .dt.date()
        .to_list()
    )
    per_fold = []
    for fold in folds(protocol, first, last):
        day = pl.col("day")
        test = scored.filter(day.is_between(day_number(fold.test_start), day_number(fold.test_end)))
        history = scored.filter(
            day.is_between(day_number(fold.train_start), day_number(fold.test_end))
        ).select("CUSTOMER_ID", "day", "TX_FRAUD")
        kept = remove_known_cards(test, history, day_number(fold.train_start))
        reachable = reachable_frauds(kept)
        assert reachable is not None  # the scenario column is required above
        per_fold.append(recall_at_shares(kept[ORACLE].to_numpy(), reachable, RECALL_AT_SHARES))
    keys = list(per_fold[0]) if per_fold else []
    mean = {k: float(np.mean([f[k] for f in per_fold])) for k in keys}
    return {"folds": per_fold, "mean": mean}


def main(argv: list[str] | None = None) -> None:
    from streams.data.handbook import read_handbook

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="handbook-format CSV (or .csv.gz)")
    parser.add_argument("--multiplier", type=float, default=5.0)
    parser.add_argument("--share", type=Fraction, default=Fraction(1, 3))
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--cards-per-day", type=float, default=3.0)
    parser.add_argument("--protocol", default="handbook-ch5")
    parser.add_argument(
        "--card-mean",
        choices=("true", "past"),
        default="true",
        help="the card's amount mean: of all its genuine payments, or of its earlier payments",
    )
    args = parser.parse_args(argv)
    df = read_handbook(args.data)
    result = bound(
        df,
        args.multiplier,
        float(args.share),
        args.days,
        args.cards_per_day,
        args.protocol,
        args.card_mean,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
