"""The handbook's transaction simulator and its three fraud scenarios, vectorized with numpy.

A reimplementation of ``generate_dataset`` and ``add_frauds`` of the Fraud-Detection-Handbook
(Le Borgne et al., 2022) as DATA.md describes them, driven by numpy Generators spawned from
one seed (the same seed gives the same frame; the random streams differ from the handbook's, so
the published file is not reproduced row for row, only in distribution):

- customers: home uniform in [0, 100]², mean amount uniform(5, 100), std = mean / 2,
  transactions a day uniform(0, 4); terminals uniform in [0, 100]²; a customer uses the terminals
  at distance < ``radius`` (none in reach: no transactions);
- each day each customer makes Poisson(rate) transactions at int(Normal(43200, 20000)) seconds,
  kept if 0 < t < 86400, amount Normal(mean, std) (a negative one redrawn uniform(0, 2·mean)),
  rounded to cents, terminal uniform among the customer's;
- frauds, in this order: amount > ``large_amount`` (scenario 1, handbook 220); each day,
  ``compromised_terminals_per_day`` terminals (2) whose transactions of the next
  ``terminal_compromise_days`` days (28) are all fraud (scenario 2); each day,
  ``compromised_cards_per_day`` cards (3) a ``compromised_card_share`` (1/3, rounded down) of
  whose transactions of the next ``card_compromise_days`` days (14) get amount ×
  ``compromised_card_multiplier`` (5) (scenario 3). As in the handbook, compromises start on
  days 0 .. last day − 1, a later scenario overrides an earlier one, and a card compromised
  twice may be hit twice (× 25 with the defaults).

The defaults are the handbook's; ``fraudstream simulate`` exposes each fraud parameter as a flag
so that the detectors can be tried on fraud they were not tuned to.

Rows are sorted by time (stable: ties keep customer then generation order) and numbered from 0.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from streams.data.attributes import (
    Profiles,
    abroad_bursts,
    attribute_columns,
    draw_merchants,
)

DAY_S = 86_400
COLUMNS = [
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
]
_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_CHUNK = 512  # customers per block of the customer × terminal distance matrix


def simulate(
    customers: int = 5000,
    terminals: int = 10000,
    days: int = 183,
    start: date = date(2018, 4, 1),
    seed: int = 0,
    radius: float = 5.0,
    compromised_terminals_per_day: int = 2,
    terminal_compromise_days: int = 28,
    compromised_cards_per_day: int = 3,
    card_compromise_days: int = 14,
    large_amount: float = 220.0,
    compromised_card_share: float = 1 / 3,
    compromised_card_multiplier: float = 5.0,
    attributes: bool = False,
    abroad_cards_per_day: int = 2,
    abroad_burst: int = 4,
) -> pl.DataFrame:
    """A labelled handbook-format transaction frame (``COLUMNS``), deterministic in ``seed``;
    with ``attributes``, plus ``ATTRIBUTE_COLUMNS`` and scenario 4 (``streams.data.attributes``:
    ``abroad_cards_per_day`` cards a day used abroad in bursts of ``abroad_burst``)."""
    # Independent streams: changing the fraud settings leaves the genuine transactions unchanged;
    # the third (attributes) leaves both unchanged.
    tx_rng, fraud_rng, attribute_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    profiles = draw_profiles(customers, terminals, tx_rng)
    df = generate_transactions(customers, terminals, days, start, tx_rng, radius, profiles)
    df = add_frauds(
        df,
        customers,
        terminals,
        fraud_rng,
        compromised_terminals_per_day=compromised_terminals_per_day,
        terminal_compromise_days=terminal_compromise_days,
        compromised_cards_per_day=compromised_cards_per_day,
        card_compromise_days=card_compromise_days,
        large_amount=large_amount,
        compromised_card_share=compromised_card_share,
        compromised_card_multiplier=compromised_card_multiplier,
    )
    if not attributes:
        return df
    merchants = draw_merchants(profiles, attribute_rng)
    bursts = abroad_bursts(
        df, profiles, merchants, attribute_rng, abroad_cards_per_day, abroad_burst
    )
    # the bursts after the rows at the same second (stable sort), then numbered from 0 again
    df = pl.concat([df.drop("TX_DATETIME"), bursts], how="diagonal_relaxed").sort(
        "TX_TIME_SECONDS", maintain_order=True
    )
    df = df.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("TRANSACTION_ID"),
        _stamps(df["TX_TIME_SECONDS"].to_numpy(), start),
    )
    extra = attribute_columns(
        df["CUSTOMER_ID"].to_numpy(), df["TERMINAL_ID"].to_numpy(), profiles, merchants
    )
    return df.select(COLUMNS).with_columns(extra)


def _stamps(seconds: np.ndarray, start: date) -> pl.Series:
    """``TX_DATETIME`` of seconds since ``start``'s midnight (UTC)."""
    epoch = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
    stamps = pl.from_epoch(pl.Series(seconds + epoch), time_unit="s")
    return stamps.dt.strftime(_DATETIME_FORMAT).alias("TX_DATETIME")


def draw_profiles(customers: int, terminals: int, rng: np.random.Generator) -> Profiles:
    """The customers' homes, amount habits and rates, and the terminals' places: the first
    draws of the transactions' Generator, in the handbook's order."""
    home = rng.uniform(0.0, 100.0, size=(customers, 2))
    mean_amount = rng.uniform(5.0, 100.0, size=customers)
    rate = rng.uniform(0.0, 4.0, size=customers)
    places = rng.uniform(0.0, 100.0, size=(terminals, 2))
    return Profiles(home, mean_amount, mean_amount / 2.0, rate, places)


def generate_transactions(
    customers: int,
    terminals: int,
    days: int,
    start: date,
    rng: np.random.Generator,
    radius: float = 5.0,
    profiles: Profiles | None = None,
) -> pl.DataFrame:
    """The genuine transactions: ``COLUMNS`` without the two fraud columns (``profiles``: drawn
    already from ``rng`` by ``draw_profiles``; drawn here when None)."""
    if profiles is None:
        profiles = draw_profiles(customers, terminals, rng)
    home, places = profiles.home, profiles.places
    mean_amount, std_amount, rate = profiles.mean_amount, profiles.std_amount, profiles.rate
    offsets, reachable = _terminals_within(home, places, radius)
    n_reachable = np.diff(offsets)

    per_day = rng.poisson(rate[:, None], size=(customers, days)).ravel()  # customer-major
    cust = np.repeat(np.repeat(np.arange(customers, dtype=np.int64), days), per_day)
    day = np.repeat(np.tile(np.arange(days, dtype=np.int64), customers), per_day)
    second = rng.normal(DAY_S / 2, 20_000.0, size=cust.size).astype(np.int64)  # int() truncates
    keep = (second > 0) & (second < DAY_S) & (n_reachable[cust] > 0)
    cust, day, second = cust[keep], day[keep], second[keep]

    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0.0, 2.0 * mean_amount[cust[negative]])
    amount = np.round(amount, 2)
    terminal = reachable[offsets[cust] + rng.integers(0, n_reachable[cust])]

    t = second + day * DAY_S
    order = np.argsort(t, kind="stable")
    t, cust, terminal, amount = t[order], cust[order], terminal[order], amount[order]
    return pl.DataFrame(
        {
            "TRANSACTION_ID": np.arange(t.size, dtype=np.int64),
            "TX_DATETIME": _stamps(t, start),
            "CUSTOMER_ID": cust,
            "TERMINAL_ID": terminal,
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": t,
            "TX_TIME_DAYS": t // DAY_S,
        },
        schema={
            c: pl.Utf8 if c == "TX_DATETIME" else pl.Float64 if c == "TX_AMOUNT" else pl.Int64
            for c in COLUMNS[:7]
        },
    )


def add_frauds(
    df: pl.DataFrame,
    customers: int,
    terminals: int,
    rng: np.random.Generator,
    compromised_terminals_per_day: int = 2,
    terminal_compromise_days: int = 28,
    compromised_cards_per_day: int = 3,
    card_compromise_days: int = 14,
    large_amount: float = 220.0,
    compromised_card_share: float = 1 / 3,
    compromised_card_multiplier: float = 5.0,
) -> pl.DataFrame:
    """``df`` plus ``TX_FRAUD``, ``TX_FRAUD_SCENARIO``, with scenario 3's amounts multiplied.

    ``df`` is ``generate_transactions``' frame (ids below ``customers`` and ``terminals``). Of
    each compromised card's transactions in its window, ``floor(n × compromised_card_share)``
    are picked and their amounts multiplied by ``compromised_card_multiplier``.
    """
    amount = df["TX_AMOUNT"].to_numpy().astype(np.float64, copy=True)
    cust = df["CUSTOMER_ID"].to_numpy().astype(np.int64)
    terminal = df["TERMINAL_ID"].to_numpy().astype(np.int64)
    day = df["TX_TIME_DAYS"].to_numpy().astype(np.int64)
    scenario = np.zeros(df.height, dtype=np.int8)
    n_days = int(day.max()) + 1 if df.height else 0

    terminal_hits, card_hits = draw_compromises(
        rng, n_days, terminals, customers, compromised_terminals_per_day, compromised_cards_per_day
    )

    scenario[amount > large_amount] = 1

    compromised = np.zeros((terminals, n_days), dtype=bool)
    for d, hit in enumerate(terminal_hits):
        compromised[hit, d : d + terminal_compromise_days] = True
    if df.height:
        scenario[compromised[terminal, day]] = 2

    by_card = np.lexsort((day, cust))  # stable: time order within a card and day
    keys = cust[by_card] * n_days + day[by_card]
    for d, hit in enumerate(card_hits):
        if not hit.size:  # no card compromised a day: no scenario 3
            continue
        end = min(d + card_compromise_days, n_days)
        lo = np.searchsorted(keys, hit * n_days + d, side="left")
        hi = np.searchsorted(keys, hit * n_days + end, side="left")
        rows = np.sort(np.concatenate([by_card[a:b] for a, b in zip(lo, hi, strict=True)]))
        picked = rng.choice(rows, size=_share_of(rows.size, compromised_card_share), replace=False)
        amount[picked] *= compromised_card_multiplier
        scenario[picked] = 3

    return df.with_columns(
        pl.Series("TX_AMOUNT", amount),
        pl.Series("TX_FRAUD", (scenario > 0).astype(np.int8)),
        pl.Series("TX_FRAUD_SCENARIO", scenario),
    ).select(COLUMNS)


def draw_compromises(
    rng: np.random.Generator,
    n_days: int,
    terminals: int,
    customers: int,
    terminals_per_day: int = 2,
    cards_per_day: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """The compromised terminals and cards of each day 0 .. n_days − 2, rows by day.

    As the handbook's ``range(TX_TIME_DAYS.max())``, no compromise starts on the last day.
    ``add_frauds`` draws these first, so a Generator in the same state reproduces them.
    """
    first_days = max(n_days - 1, 0)
    k_terminals = min(terminals_per_day, terminals)
    k_cards = min(cards_per_day, customers)
    terminal_hits = np.array(
        [rng.choice(terminals, size=k_terminals, replace=False) for _ in range(first_days)],
        dtype=np.int64,
    ).reshape(first_days, k_terminals)
    card_hits = np.array(
        [rng.choice(customers, size=k_cards, replace=False) for _ in range(first_days)],
        dtype=np.int64,
    ).reshape(first_days, k_cards)
    return terminal_hits, card_hits


def _share_of(n: int, share: float) -> int:
    """``floor(n × share)``, robust to float error: 29 % of 100 rows is 29 (0.29 × 100 is
    28.999…), and with share 1/3 it is exactly ``n // 3``, the handbook's ``int(n / 3)``."""
    return min(n, int(n * share + 1e-9))


def write_csv(df: pl.DataFrame, path: Path | str) -> Path:
    """Write ``df`` as handbook CSV; gzip-compressed when ``path`` ends with ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        df.write_csv(path, compression="gzip", compression_level=6)
    else:
        df.write_csv(path)
    return path


def _terminals_within(
    home: np.ndarray, places: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of each customer's terminals at distance < radius: (offsets, terminal ids)."""
    counts: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    for lo in range(0, home.shape[0], _CHUNK):
        block = home[lo : lo + _CHUNK]
        dist = np.sqrt(
            np.square(block[:, None, 0] - places[None, :, 0])
            + np.square(block[:, None, 1] - places[None, :, 1])
        )
        near = dist < radius
        counts.append(near.sum(axis=1))
        ids.append(np.nonzero(near)[1])  # row-major: grouped by customer, ascending terminal
    offsets = np.zeros(home.shape[0] + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=offsets[1:])
    reachable = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)
    return offsets, reachable
