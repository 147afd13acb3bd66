"""Transaction attributes for the simulator (``simulate --attributes``) and a fourth fraud
scenario that only they reveal, so rules over attributes can be tested and backtested on data.

Geography stays coherent with the handbook's model (customers and terminals on a 100 × 100
grid, a customer pays at the terminals within reach): the grid is split into vertical bands,
one country each, so a card's country is its customer's band and a merchant's its terminal's;
customers near a border pay abroad now and then, as people do. Each terminal has a merchant
category code (weighted draw of common MCCs, codes kept as strings) and a channel (``ecom``
for ``ECOM_SHARE`` of terminals, else ``pos``).

Scenario 4, "card used abroad in a burst": each day, ``abroad_cards_per_day`` cards get
``abroad_burst`` extra transactions within ``BURST_HOURS`` at online merchants of other
countries, with amounts drawn like the card's own (so no amount rule sees them): stolen card
numbers tested and spent at foreign web shops. They are new rows (labelled fraud, scenario 4);
``simulate`` re-sorts and renumbers the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

ATTRIBUTE_COLUMNS = ("card_country", "merchant_country", "mcc", "channel")
# (country, right edge of its band on the x axis)
BANDS = (("FR", 40.0), ("DE", 60.0), ("ES", 75.0), ("IT", 90.0), ("GB", 100.0))
MCCS = ("5411", "5812", "5541", "5311", "5999", "4111", "5732", "7011", "4829", "7995")
MCC_WEIGHTS = (0.25, 0.15, 0.12, 0.10, 0.10, 0.08, 0.07, 0.06, 0.04, 0.03)
ECOM_SHARE = 0.2
BURST_HOURS = 3
DAY_S = 86_400


@dataclass(frozen=True)
class Profiles:
    """What the simulator drew for customers and terminals (``simulate.draw_profiles``)."""

    home: np.ndarray  # customers × 2
    mean_amount: np.ndarray
    std_amount: np.ndarray
    rate: np.ndarray
    places: np.ndarray  # terminals × 2


def country_of(xy: np.ndarray) -> np.ndarray:
    """Index into ``BANDS`` of each point's band."""
    edges = np.array([edge for _, edge in BANDS[:-1]])
    return np.searchsorted(edges, xy[:, 0], side="right")


@dataclass(frozen=True)
class Merchants:
    country: np.ndarray  # band index per terminal
    mcc: np.ndarray  # index into MCCS per terminal
    ecom: np.ndarray  # bool per terminal


def draw_merchants(profiles: Profiles, rng: np.random.Generator) -> Merchants:
    n = profiles.places.shape[0]
    return Merchants(
        country=country_of(profiles.places),
        mcc=np.asarray(rng.choice(len(MCCS), size=n, p=np.asarray(MCC_WEIGHTS))),
        ecom=np.asarray(rng.random(n) < ECOM_SHARE),
    )


def abroad_bursts(
    df: pl.DataFrame,
    profiles: Profiles,
    merchants: Merchants,
    rng: np.random.Generator,
    cards_per_day: int,
    burst: int,
) -> pl.DataFrame:
    """Scenario 4's rows (``TRANSACTION_ID`` -1: ``simulate`` numbers them), columns of ``df``
    (``TX_DATETIME`` aside: ``simulate`` writes it for every row)."""
    n_days = int(df["TX_TIME_DAYS"].cast(pl.Int64).max() or 0) + 1 if df.height else 0  # type: ignore[arg-type]
    card_country = country_of(profiles.home)
    active = np.unique(df["CUSTOMER_ID"].to_numpy())
    rows: list[tuple[int, int, float, int]] = []  # (customer, terminal, amount, second)
    if not (cards_per_day and burst and active.size):
        return df.head(0)
    for day in range(n_days):
        for card in rng.choice(active, size=min(cards_per_day, active.size), replace=False):
            foreign = np.flatnonzero((merchants.country != card_country[card]) & merchants.ecom)
            if not foreign.size:
                continue
            first = int(rng.integers(0, DAY_S - BURST_HOURS * 3600))
            seconds = np.sort(rng.integers(0, BURST_HOURS * 3600, size=burst)) + first
            shops = rng.choice(foreign, size=burst)
            drawn = rng.normal(profiles.mean_amount[card], profiles.std_amount[card], burst)
            for shop, amount, second in zip(
                shops, np.round(np.abs(drawn), 2), seconds, strict=True
            ):
                rows.append((int(card), int(shop), float(amount), day * DAY_S + int(second)))
    if not rows:
        return df.head(0)
    cust, term, amount, t = (np.array(col) for col in zip(*rows, strict=True))
    return pl.DataFrame(
        {
            "TRANSACTION_ID": np.full(len(rows), -1, dtype=np.int64),
            "CUSTOMER_ID": cust.astype(np.int64),
            "TERMINAL_ID": term.astype(np.int64),
            "TX_AMOUNT": amount.astype(np.float64),
            "TX_TIME_SECONDS": t.astype(np.int64),
            "TX_TIME_DAYS": (t // DAY_S).astype(np.int64),
            "TX_FRAUD": np.ones(len(rows), dtype=np.int8),
            "TX_FRAUD_SCENARIO": np.full(len(rows), 4, dtype=np.int8),
        }
    )


def attribute_columns(
    customers: np.ndarray, terminals: np.ndarray, profiles: Profiles, merchants: Merchants
) -> list[pl.Series]:
    """``ATTRIBUTE_COLUMNS`` of rows with these customer and terminal ids."""
    names = np.array([country for country, _ in BANDS])
    card_country = country_of(profiles.home)
    return [
        pl.Series("card_country", names[card_country[customers]]),
        pl.Series("merchant_country", names[merchants.country[terminals]]),
        pl.Series("mcc", np.array(MCCS)[merchants.mcc[terminals]]),
        pl.Series("channel", np.where(merchants.ecom[terminals], "ecom", "pos")),
    ]
