"""The handbook simulator: determinism, schema, the three fraud scenarios, CSV round trip."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from streams.data.handbook import read_handbook, read_handbook_frame
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


# The fraud-scenario parameters (``fraudstream simulate`` flags, shared/docs/CLI.md).

HANDBOOK_FRAUD = {
    "large_amount": 220.0,
    "compromised_terminals_per_day": 2,
    "terminal_compromise_days": 28,
    "compromised_cards_per_day": 3,
    "card_compromise_days": 14,
    "compromised_card_share": 1 / 3,
    "compromised_card_multiplier": 5.0,
}


def _small(**fraud: float) -> pl.DataFrame:
    return simulate(SMALL["customers"], SMALL["terminals"], SMALL["days"], seed=3, **fraud)  # type: ignore[arg-type]


def _csv_bytes(df: pl.DataFrame, tmp_path: Path, name: str) -> bytes:
    return write_csv(df, tmp_path / name).read_bytes()


def _staged_frauds(staged: Staged, **fraud: float) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """``staged``'s genuine frame through add_frauds with ``fraud``, and the schedule it used."""
    genuine = staged[0]
    customers, terminals = 500, 1000
    labelled = add_frauds(genuine, customers, terminals, np.random.default_rng(12), **fraud)  # type: ignore[arg-type]
    n_days = genuine.select(pl.col("TX_TIME_DAYS").max()).item() + 1
    terminal_hits, card_hits = draw_compromises(
        np.random.default_rng(12),
        n_days,
        terminals,
        customers,
        int(fraud.get("compromised_terminals_per_day", 2)),
        int(fraud.get("compromised_cards_per_day", 3)),
    )
    return labelled, terminal_hits, card_hits


def _windows_per_row(
    ids: np.ndarray, day: np.ndarray, hits: np.ndarray, length: int
) -> tuple[np.ndarray, list[int]]:
    """How many compromise windows each row falls in, and each window's row count."""
    times = np.zeros(ids.size, dtype=np.int64)
    sizes: list[int] = []
    for d, hit in enumerate(hits.tolist()):
        inside = np.isin(ids, hit) & (day >= d) & (day < d + length)
        times += inside
        sizes.append(int(inside.sum()))
    return times, sizes


def test_the_defaults_are_the_handbook_fraud_parameters(
    small: pl.DataFrame, tmp_path: Path
) -> None:
    # The handbook's values spelled out give the default file byte for byte.
    explicit = _small(**HANDBOOK_FRAUD)
    assert explicit.equals(small)
    assert _csv_bytes(explicit, tmp_path, "a.csv") == _csv_bytes(small, tmp_path, "b.csv")


def test_fraud_parameters_leave_the_genuine_transactions_alone(small: pl.DataFrame) -> None:
    other = _small(
        large_amount=300.0,
        compromised_terminals_per_day=5,
        terminal_compromise_days=3,
        compromised_cards_per_day=6,
        card_compromise_days=4,
        compromised_card_share=0.5,
        compromised_card_multiplier=2.0,
    )
    same = [c for c in COLUMNS if c not in ("TX_AMOUNT", "TX_FRAUD", "TX_FRAUD_SCENARIO")]
    assert other.select(same).equals(small.select(same))
    assert not other["TX_FRAUD_SCENARIO"].equals(small["TX_FRAUD_SCENARIO"])


def test_larger_big_amount_moves_the_scenario_1_threshold(small: pl.DataFrame) -> None:
    raised = _small(large_amount=250.0)
    scenario, amount = raised["TX_FRAUD_SCENARIO"], raised["TX_AMOUNT"]
    assert (scenario == 1).sum() > 0
    assert (amount.filter(scenario == 1) > 250.0).all()  # no scenario-1 fraud at or below it
    # Genuine amounts are the same: above 250 still scenario 1 unless another scenario overrode.
    assert (scenario.filter((amount > 250.0) & (scenario < 2)) == 1).all()
    # Between the two thresholds: fraud by default, genuine now (scenarios 2 and 3 aside).
    between = (small["TX_AMOUNT"] > 220.0) & (small["TX_AMOUNT"] <= 250.0)
    between &= small["TX_FRAUD_SCENARIO"] == 1
    assert between.sum() > 0
    assert (scenario.filter(between) == 0).all()
    assert (raised["TX_FRAUD"].filter(between) == 0).all()


def test_infinite_big_amount_means_no_scenario_1() -> None:
    df = _small(large_amount=float("inf"))
    assert 1 not in df["TX_FRAUD_SCENARIO"].unique().to_list()
    assert df["TX_AMOUNT"].max() > 220.0  # type: ignore[operator]


def test_no_compromised_terminals_means_no_scenario_2(small: pl.DataFrame) -> None:
    df = _small(compromised_terminals_per_day=0)
    assert set(df["TX_FRAUD_SCENARIO"].unique().to_list()) == {0, 1, 3}
    assert (small["TX_FRAUD_SCENARIO"] == 2).sum() > 0


def test_no_compromised_cards_means_no_scenario_3_and_genuine_amounts(
    small: pl.DataFrame,
) -> None:
    df = _small(compromised_cards_per_day=0)
    assert set(df["TX_FRAUD_SCENARIO"].unique().to_list()) == {0, 1, 2}
    # Only scenario 3 changes amounts: the default frame's other rows have the same ones, its
    # scenario-3 rows (non-zero) are 5^k times these.
    was_3 = small["TX_FRAUD_SCENARIO"] == 3
    assert (df["TX_AMOUNT"] == small["TX_AMOUNT"]).filter(~was_3).all()
    multiplied = (small["TX_AMOUNT"] / df["TX_AMOUNT"]).filter(was_3 & (df["TX_AMOUNT"] > 0))
    assert multiplied.len() > 0
    assert (multiplied >= 5.0 - 1e-9).all()


@pytest.mark.parametrize("multiplier", [3.0, 0.5])
def test_customer_multiplier_scales_scenario_3_amounts(
    small: pl.DataFrame, multiplier: float
) -> None:
    genuine = _small(compromised_cards_per_day=0)["TX_AMOUNT"].to_numpy()  # same seed, no ×
    scaled = _small(compromised_card_multiplier=multiplier)
    # The multiplier draws nothing: the same transactions are picked as with the default × 5.
    assert scaled["TX_FRAUD_SCENARIO"].equals(small["TX_FRAUD_SCENARIO"])
    hit = scaled["TX_FRAUD_SCENARIO"].to_numpy() == 3
    nonzero = genuine > 0
    assert (hit & nonzero).sum() > 10
    ratio = scaled["TX_AMOUNT"].to_numpy()[nonzero] / genuine[nonzero]
    ratio_5 = small["TX_AMOUNT"].to_numpy()[nonzero] / genuine[nonzero]
    hit = hit[nonzero]
    powers = np.round(np.log(ratio_5[hit]) / np.log(5.0)).astype(int)  # times picked
    assert (powers >= 1).all()
    np.testing.assert_allclose(ratio[hit], multiplier**powers, rtol=1e-12)
    assert (powers == 1).sum() > 0
    np.testing.assert_allclose(ratio[hit][powers == 1], multiplier, rtol=1e-12)
    assert (ratio[~hit] == 1.0).all()


@pytest.mark.parametrize("days", [14, 5])
def test_customer_share_one_takes_every_transaction_in_the_window(
    staged: Staged, days: int
) -> None:
    genuine = staged[0]
    labelled, _, card_hits = _staged_frauds(
        staged,
        compromised_card_share=1.0,
        card_compromise_days=days,
        compromised_card_multiplier=2.0,
    )
    times, _ = _windows_per_row(
        labelled["CUSTOMER_ID"].to_numpy(), labelled["TX_TIME_DAYS"].to_numpy(), card_hits, days
    )
    hit = labelled["TX_FRAUD_SCENARIO"].to_numpy() == 3
    assert hit.sum() > 0
    assert (hit == (times > 0)).all()  # scenario 3 is exactly the compromised cards' windows
    # Each row is doubled once per window it falls in.
    np.testing.assert_allclose(
        labelled["TX_AMOUNT"].to_numpy(), genuine["TX_AMOUNT"].to_numpy() * 2.0**times
    )


def test_customer_share_half_picks_half_of_each_window(staged: Staged) -> None:
    genuine = staged[0]
    labelled, _, card_hits = _staged_frauds(
        staged, compromised_card_share=0.5, compromised_card_multiplier=2.0
    )
    times, sizes = _windows_per_row(
        labelled["CUSTOMER_ID"].to_numpy(), labelled["TX_TIME_DAYS"].to_numpy(), card_hits, 14
    )
    hit = labelled["TX_FRAUD_SCENARIO"].to_numpy() == 3
    assert (times[hit] > 0).all()
    before, after = genuine["TX_AMOUNT"].to_numpy(), labelled["TX_AMOUNT"].to_numpy()
    nonzero = before > 0
    powers = np.round(np.log2(after[nonzero] / before[nonzero])).astype(int)
    picks = sum(n // 2 for n in sizes)
    # Every pick doubles an amount: the powers add up to the picks (zero amounts aside).
    assert powers.sum() <= picks <= powers.sum() + int((~nonzero).sum())
    # Half, not the default third: clearly more than a third of the window rows.
    assert picks > 1.4 * sum(n // 3 for n in sizes)


def test_terminal_parameters_set_scenario_2(staged: Staged) -> None:
    labelled, terminal_hits, _ = _staged_frauds(
        staged, compromised_terminals_per_day=4, terminal_compromise_days=3
    )
    assert terminal_hits.shape[1] == 4
    times, _ = _windows_per_row(
        labelled["TERMINAL_ID"].to_numpy(), labelled["TX_TIME_DAYS"].to_numpy(), terminal_hits, 3
    )
    scenario = labelled["TX_FRAUD_SCENARIO"].to_numpy()
    assert (scenario == 2).sum() > 0
    not_3 = scenario != 3
    assert ((scenario == 2) == (times > 0))[not_3].all()
    assert (labelled["TX_FRAUD"].to_numpy()[times > 0] == 1).all()


def test_share_of_is_floor_robust_to_float_error() -> None:
    from streams.data.simulate import _share_of

    assert [_share_of(n, 1 / 3) for n in range(10)] == [n // 3 for n in range(10)]
    assert all(_share_of(n, 1 / 3) == n // 3 for n in range(0, 3_000_000, 7))
    assert _share_of(100, 0.29) == 29  # 0.29 × 100 is 28.999… in floats
    assert _share_of(7, 1.0) == 7
    assert _share_of(1, 0.5) == 0


# The command line: fraudstream simulate [scenario flags].

CLI_SMALL = ["--customers", "50", "--terminals", "200", "--days", "10", "--seed", "5"]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from streams.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_cli_simulate_defaults_are_the_handbooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tx.csv"
    code, stdout, err = _cli(["simulate", "--out", str(out), *CLI_SMALL], capsys)
    assert code == 0, err
    expected = simulate(customers=50, terminals=200, days=10, seed=5, **HANDBOOK_FRAUD)  # type: ignore[arg-type]
    assert out.read_bytes() == _csv_bytes(expected, tmp_path, "expected.csv")
    assert f"wrote {expected.height} transactions ({int(expected['TX_FRAUD'].sum())} frauds)" in (
        stdout
    )


@pytest.mark.parametrize("share", ["1/2", "0.5"])
def test_cli_simulate_passes_every_scenario_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], share: str
) -> None:
    out = tmp_path / "tx.csv"
    flags = [
        "--big-amount=150",
        "--terminals-per-day=3",
        "--terminal-days=5",
        "--customers-per-day=4",
        "--customer-days=6",
        f"--customer-share={share}",
        "--customer-multiplier=3",
    ]
    code, _, err = _cli(["simulate", "--out", str(out), *CLI_SMALL, *flags], capsys)
    assert code == 0, err
    expected = simulate(
        customers=50,
        terminals=200,
        days=10,
        seed=5,
        large_amount=150.0,
        compromised_terminals_per_day=3,
        terminal_compromise_days=5,
        compromised_cards_per_day=4,
        card_compromise_days=6,
        compromised_card_share=0.5,
        compromised_card_multiplier=3.0,
    )
    assert out.read_bytes() == _csv_bytes(expected, tmp_path, "expected.csv")
    default = simulate(customers=50, terminals=200, days=10, seed=5)
    assert not expected.equals(default)


def test_cli_simulate_big_amount_inf_disables_scenario_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tx.csv"
    code, _, err = _cli(
        ["simulate", "--out", str(out), *CLI_SMALL, "--big-amount", "inf", "--days", "30"], capsys
    )
    assert code == 0, err
    assert 1 not in read_handbook(out)["TX_FRAUD_SCENARIO"].unique().to_list()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--customer-share", "0"),
        ("--customer-share", "1.5"),
        ("--customer-share", "-1/3"),
        ("--customer-share", "a third"),
        ("--customer-share", "1/0"),
        ("--customer-share", "nan"),
        ("--customer-multiplier", "0"),
        ("--customer-multiplier", "-5"),
        ("--customer-multiplier", "nan"),
        ("--customer-multiplier", "inf"),
        ("--big-amount", "0"),
        ("--big-amount", "-220"),
        ("--big-amount", "nan"),
        ("--days", "0"),
        ("--customers", "0"),
        ("--terminals", "0"),
        ("--terminal-days", "0"),
        ("--customer-days", "0"),
        ("--terminals-per-day", "-1"),
        ("--customers-per-day", "-1"),
    ],
)
def test_cli_simulate_rejects_bad_scenario_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    out = tmp_path / "tx.csv"
    code, _, err = _cli(["simulate", "--out", str(out), *CLI_SMALL, f"{flag}={value}"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {flag} must be"), lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_attributes_leave_the_plain_simulation_unchanged_and_add_scenario_4() -> None:
    from streams.data.attributes import ATTRIBUTE_COLUMNS
    from streams.stage1.history import frame_transactions

    kwargs = {"customers": 300, "terminals": 600, "days": 20, "seed": 9}
    plain = simulate(**kwargs)
    assert simulate(**kwargs, attributes=False).equals(plain)
    rich = simulate(**kwargs, attributes=True)
    assert rich.equals(simulate(**kwargs, attributes=True))  # same seed, same frame
    assert rich.columns == [*plain.columns, *ATTRIBUTE_COLUMNS]
    assert all(rich[c].dtype == pl.Utf8 for c in ATTRIBUTE_COLUMNS)
    assert rich["TRANSACTION_ID"].to_list() == list(range(rich.height))
    assert rich["TX_TIME_SECONDS"].is_sorted()
    # the genuine transactions are the plain ones, mostly domestic
    genuine = rich.filter(pl.col("TX_FRAUD_SCENARIO") != 4)
    assert genuine.drop(*ATTRIBUTE_COLUMNS, "TRANSACTION_ID").equals(plain.drop("TRANSACTION_ID"))
    domestic = (genuine["card_country"] == genuine["merchant_country"]).mean()
    assert 0.75 < domestic < 1.0
    # scenario 4: 2 cards a day (20 days), bursts of 4 online abroad within 3 hours, fraud
    bursts = rich.filter(pl.col("TX_FRAUD_SCENARIO") == 4)
    assert bursts.height == 2 * 4 * 20 and (bursts["TX_FRAUD"] == 1).all()
    assert (bursts["card_country"] != bursts["merchant_country"]).all()
    assert (bursts["channel"] == "ecom").all()
    spans = bursts.group_by("CUSTOMER_ID", "TX_TIME_DAYS").agg(
        (pl.col("TX_TIME_SECONDS").max() - pl.col("TX_TIME_SECONDS").min()).alias("span")
    )
    assert (spans["span"] < 3 * 3600).all()
    # carried into the transactions stage 1's offline runs screen
    txs = frame_transactions(read_handbook_frame(rich.head(5)))
    assert txs[0].raw == {c: rich[c][0] for c in ATTRIBUTE_COLUMNS}


def test_attribute_columns_are_read_back_as_text(tmp_path: Path) -> None:
    rich = simulate(customers=200, terminals=400, days=5, seed=2, attributes=True)
    path = write_csv(rich, tmp_path / "a.csv")
    again = read_handbook(path)
    assert again["mcc"].dtype == pl.Utf8 and set(again["mcc"]) <= set(rich["mcc"])
