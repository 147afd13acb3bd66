"""The handbook simulator: determinism, schema, the three fraud scenarios, CSV round trip."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from streams.data.handbook import read_handbook
from streams.data.simulate import (
    COLUMNS,
    DAY_S,
    _terminals_within,
    add_frauds,
    draw_compromises,
    generate_transactions,
    simulate,
    write_csv,
)

SMALL: dict[str, int] = {"customers": 300, "terminals": 600, "days": 45}
Staged = tuple[pl.DataFrame, pl.DataFrame, tuple[np.ndarray, np.ndarray]]


@pytest.fixture(scope="module")
def small() -> pl.DataFrame:
    return simulate(SMALL["customers"], SMALL["terminals"], SMALL["days"], seed=3)


@pytest.fixture(scope="module")
def staged() -> Staged:
    """(genuine transactions, with frauds, the compromise schedule add_frauds used)."""
    customers, terminals = 500, 1000
    genuine = generate_transactions(
        customers, terminals, 60, date(2018, 4, 1), np.random.default_rng(11)
    )
    labelled = add_frauds(genuine, customers, terminals, np.random.default_rng(12))
    n_days = genuine.select(pl.col("TX_TIME_DAYS").max()).item() + 1
    schedule = draw_compromises(np.random.default_rng(12), n_days, terminals, customers)
    return genuine, labelled, schedule


def test_same_seed_same_frame(small: pl.DataFrame) -> None:
    assert simulate(SMALL["customers"], SMALL["terminals"], SMALL["days"], seed=3).equals(small)


def test_different_seeds_differ(small: pl.DataFrame) -> None:
    other = simulate(SMALL["customers"], SMALL["terminals"], SMALL["days"], seed=4)
    assert not other.equals(small)
    assert abs(other.height - small.height) < 0.2 * small.height


def test_columns_and_types(small: pl.DataFrame) -> None:
    assert small.columns == COLUMNS
    assert small.schema == pl.Schema(
        {
            "TRANSACTION_ID": pl.Int64,
            "TX_DATETIME": pl.Utf8,
            "CUSTOMER_ID": pl.Int64,
            "TERMINAL_ID": pl.Int64,
            "TX_AMOUNT": pl.Float64,
            "TX_TIME_SECONDS": pl.Int64,
            "TX_TIME_DAYS": pl.Int64,
            "TX_FRAUD": pl.Int8,
            "TX_FRAUD_SCENARIO": pl.Int8,
        }
    )


def test_rows_sorted_numbered_and_consistent(small: pl.DataFrame) -> None:
    assert small["TRANSACTION_ID"].to_list() == list(range(small.height))
    seconds = small["TX_TIME_SECONDS"]
    assert seconds.is_sorted()
    assert (small["TX_TIME_DAYS"] == seconds // DAY_S).all()
    of_day = small.select(pl.col("TX_TIME_SECONDS") % DAY_S).to_series()
    assert (of_day > 0).all()  # 0 < t < 86400: never midnight exactly
    assert 40_000 < small.select((pl.col("TX_TIME_SECONDS") % DAY_S).mean()).item() < 46_400
    assert small["TX_DATETIME"][0].startswith("2018-04-01T")
    parsed = small["TX_DATETIME"].str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="ms")
    epoch = int(datetime(2018, 4, 1, tzinfo=UTC).timestamp())
    assert (parsed.dt.epoch("s") == seconds + epoch).all()
    assert (small["TERMINAL_ID"] < SMALL["terminals"]).all()
    assert (small["CUSTOMER_ID"] < SMALL["customers"]).all()
    assert (small["TX_AMOUNT"] >= 0).all()


def test_start_date_moves_the_clock() -> None:
    df = simulate(customers=20, terminals=200, days=3, start=date(2020, 2, 28), seed=1)
    days = df["TX_DATETIME"].str.slice(0, 10).unique().sort().to_list()
    assert days == ["2020-02-28", "2020-02-29", "2020-03-01"]


def test_volume_is_plausible(small: pl.DataFrame) -> None:
    # About 2 transactions a day per customer, less the ~3 % of times outside the day.
    per_customer_day = small.height / (SMALL["customers"] * SMALL["days"])
    assert 1.6 < per_customer_day < 2.2


def test_customers_without_terminals_make_no_transactions() -> None:
    empty = simulate(customers=50, terminals=100, days=5, radius=0.0)
    assert empty.height == 0
    assert empty.columns == COLUMNS
    sparse = simulate(customers=400, terminals=30, days=5, radius=5.0, seed=2)
    # ~ 1 − exp(−30·π·25/10⁴) ≈ 21 % of the customers have a terminal in reach
    assert 0 < sparse["CUSTOMER_ID"].n_unique() < 200


def test_terminals_within_radius_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    home = rng.uniform(0, 100, size=(700, 2))  # more than one block of customers
    places = rng.uniform(0, 100, size=(300, 2))
    offsets, ids = _terminals_within(home, places, 9.0)
    for c in range(home.shape[0]):
        dist = np.sqrt(((places - home[c]) ** 2).sum(axis=1))
        assert ids[offsets[c] : offsets[c + 1]].tolist() == np.flatnonzero(dist < 9.0).tolist()


def test_fraud_flag_is_scenario(small: pl.DataFrame) -> None:
    assert (small["TX_FRAUD"] == (small["TX_FRAUD_SCENARIO"] > 0).cast(pl.Int8)).all()
    assert set(small["TX_FRAUD_SCENARIO"].unique().to_list()) == {0, 1, 2, 3}


def test_default_simulation_looks_like_the_published_data() -> None:
    began = time.perf_counter()
    df = simulate()  # the published data's settings
    assert time.perf_counter() - began < 60.0
    # Published: 1,754,155 transactions, 4,990 cards; scenarios 973 / 9,077 / 4,631 (0.837 %).
    assert 1.65e6 < df.height < 1.85e6
    assert 4900 < df["CUSTOMER_ID"].n_unique() <= 5000
    counts = dict(df["TX_FRAUD_SCENARIO"].value_counts().iter_rows())
    for scenario, published in ((1, 973), (2, 9077), (3, 4631)):
        assert 0.6 * published < counts[scenario] < 1.5 * published
    rate = df["TX_FRAUD"].mean()
    assert isinstance(rate, float)
    assert 0.006 < rate < 0.011


def test_scenario_1_is_large_amounts(staged: Staged) -> None:
    genuine, labelled, _ = staged
    large = genuine["TX_AMOUNT"] > 220
    scenario = labelled["TX_FRAUD_SCENARIO"]
    assert large.sum() > 0
    assert (labelled.filter(large)["TX_FRAUD"] == 1).all()  # maybe relabelled 2 or 3
    untouched = scenario < 2
    assert ((scenario == 1) == large).filter(untouched).all()
    assert (labelled["TX_AMOUNT"] == genuine["TX_AMOUNT"]).filter(scenario < 3).all()


def test_scenario_2_is_compromised_terminals_in_window(staged: Staged) -> None:
    genuine, labelled, (terminal_hits, _) = staged
    windows = pl.DataFrame(
        [(t, d) for d, hits in enumerate(terminal_hits.tolist()) for t in hits],
        schema={"TERMINAL_ID": pl.Int64, "FROM_DAY": pl.Int64},
        orient="row",
    )
    inside = (
        labelled.with_row_index("row")
        .join(windows, on="TERMINAL_ID")
        .filter(pl.col("TX_TIME_DAYS").is_between(pl.col("FROM_DAY"), pl.col("FROM_DAY") + 27))[
            "row"
        ]
        .unique()
    )
    in_window = pl.Series(np.isin(np.arange(labelled.height), inside.to_numpy()))
    scenario = labelled["TX_FRAUD_SCENARIO"]
    assert in_window.sum() > 0
    assert ((scenario == 2) == in_window).filter(scenario != 3).all()
    assert (labelled["TX_FRAUD"] == 1).filter(in_window).all()
    assert genuine.height == labelled.height


def test_scenario_3_multiplies_a_third_by_five(staged: Staged) -> None:
    genuine, labelled, (_, card_hits) = staged
    scenario = labelled["TX_FRAUD_SCENARIO"].to_numpy()
    with np.errstate(invalid="ignore"):
        ratio = labelled["TX_AMOUNT"].to_numpy() / genuine["TX_AMOUNT"].to_numpy()
    hit = scenario == 3
    assert hit.sum() > 0
    cust = labelled["CUSTOMER_ID"].to_numpy()
    day = labelled["TX_TIME_DAYS"].to_numpy()
    times = np.zeros(labelled.height, dtype=np.int64)  # how many windows a row falls in
    expected_picks = 0
    for d, cards in enumerate(card_hits.tolist()):
        candidates = np.isin(cust, cards) & (day >= d) & (day < d + 14)
        expected_picks += int(candidates.sum()) // 3
        times += candidates
    assert (times[hit] > 0).all()
    zero_amount = genuine["TX_AMOUNT"].to_numpy() == 0
    powers = np.round(np.log(ratio[hit & ~zero_amount]) / np.log(5)).astype(int)
    assert (powers >= 1).all()
    np.testing.assert_allclose(ratio[hit & ~zero_amount], 5.0**powers, rtol=1e-12)
    assert (powers <= times[hit & ~zero_amount]).all()
    # Every pick multiplies by 5: the powers add up to the picks (zero amounts aside).
    assert powers.sum() <= expected_picks <= powers.sum() + zero_amount.sum()
    assert (ratio[~hit & ~zero_amount] == 1.0).all()


def test_write_csv_round_trip(small: pl.DataFrame, tmp_path: Path) -> None:
    for name in ("tx.csv", "tx.csv.gz"):
        path = write_csv(small, tmp_path / "sub" / name)
        if name.endswith(".gz"):
            assert path.read_bytes()[:2] == b"\x1f\x8b"
        back = read_handbook(path)
        epoch_ms = int(datetime(2018, 4, 1, tzinfo=UTC).timestamp()) * 1000
        assert (back["ts_ms"] == back["TX_TIME_SECONDS"] * 1000 + epoch_ms).all()
        restored = back.drop("ts_ms").with_columns(
            pl.col("TX_FRAUD").cast(pl.Int8), pl.col("TX_FRAUD_SCENARIO").cast(pl.Int8)
        )
        assert restored.equals(small)


def test_header_and_datetime_format_are_the_handbook_files(tmp_path: Path) -> None:
    df = simulate(customers=10, terminals=100, days=2, seed=0)
    path = write_csv(df, tmp_path / "tx.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1].split(",")[1][10] == "T"  # 2018-04-01T00:00:31, as the published file


def test_small_simulation_is_fast() -> None:
    began = time.perf_counter()
    simulate(customers=500, terminals=10000, days=60)
    assert time.perf_counter() - began < 5.0
