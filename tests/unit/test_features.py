"""The stream feature code on small hand-made sequences: window edges, label delay, late events,
compaction, calendar."""

from __future__ import annotations

import doctest
import math
import random
from bisect import bisect_right
from datetime import UTC, datetime

import pytest

import streams.features.engine as engine_module
from streams.features.card import RATIO_STEPS, CardWindows, terminal_key
from streams.features.engine import N_FEATURES, FeatureEngine, calendar
from streams.features.names import CARD_COMPROMISE_FAMILY, CARD_MEDIAN_FAMILY, MODEL_FEATURES
from streams.features.terminal import TerminalLabels, TerminalTable

D = 86_400_000
H = 3_600_000
T0 = 1_522_540_800_000  # 2018-04-01 00:00:00 UTC, a Sunday
COL = {name: i for i, name in enumerate(MODEL_FEATURES)}


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def feature(row: list[float], name: str) -> float:
    return row[COL[name]]


def naive_card(
    history: list[tuple[int, float, str]], t: int, amount: float, terminal: str
) -> dict[str, float]:
    """DATA.md's card definitions by brute force; ``history`` = the card's earlier transactions."""
    rows = [*history, (t, amount, terminal)]
    out: dict[str, float] = {}
    for n in (1, 7, 30):
        window = [a for tj, a, _ in rows if t - n * D < tj <= t]
        out[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = len(window)
        out[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = sum(window) / len(window)
    previous = [(tj, a, term) for tj, a, term in history if t - 30 * D < tj <= t]
    total = sum(a for _, a, _ in previous)
    out["CARD_AMOUNT_RATIO_30DAY"] = amount / (total / len(previous)) if total > 0 else 1.0
    out["CARD_SECONDS_SINCE_LAST_TX"] = (t - previous[-1][0]) / 1000 if previous else 30 * 86400.0
    out["CARD_NB_TX_1HOUR_WINDOW"] = sum(1 for tj, _, _ in rows if t - H < tj <= t)
    out["CARD_NEW_TERMINAL"] = 0.0 if any(term == terminal for _, _, term in previous) else 1.0
    out["CARD_AMOUNT_RATIO_MEDIAN_30DAY"] = _median_ratio(history, t, amount)
    recent = [
        _median_ratio(history[:j], tj, a)
        for j, (tj, a, _) in enumerate(history)
        if t - 14 * D < tj <= t
    ]
    out["CARD_NB_HIGH_RATIO_14DAY"] = float(sum(r >= 2.0 for r in recent))
    out["CARD_MAX_RATIO_14DAY"] = max(recent, default=0.0)
    last_days = [
        _median_ratio(history[:j], tj, a)
        for j, (tj, a, _) in enumerate(history)
        if t - 3 * D < tj <= t
    ]
    out["CARD_NB_MID_RATIO_14DAY"] = float(sum(r >= 1.5 for r in recent))
    out["CARD_NB_TOP_RATIO_14DAY"] = float(sum(r >= 3.0 for r in recent))
    out["CARD_NB_MID_RATIO_3DAY"] = float(sum(r >= 1.5 for r in last_days))
    out["CARD_NB_HIGH_RATIO_3DAY"] = float(sum(r >= 2.0 for r in last_days))
    out["CARD_NB_TOP_RATIO_3DAY"] = float(sum(r >= 3.0 for r in last_days))
    out["CARD_COMPROMISE_LOGIT"] = _naive_compromise(history, t, amount)
    return out


def _naive_compromise(history: list[tuple[int, float, str]], t: int, amount: float) -> float:
    """``compromise_logit`` from its definition: for each start day b of the last 14, the odds
    are the product of the likelihood ratios of the card's payments since (t - (b+1) days,
    t]; the posterior of a compromise then weighs this payment's own ratio."""
    previous = sorted(a for tj, a, _ in history if t - 30 * D < tj <= t)
    k = len(previous)
    if k < 4:
        return math.log(1e-3)
    median = previous[k // 2] if k % 2 else (previous[k // 2 - 1] + previous[k // 2]) / 2
    if median <= 0:
        return math.log(1e-3)
    cv = min(max((previous[3 * k // 4] - previous[k // 4]) / (1.349 * median), 0.2), 2.0)

    def log_ratio(r: float) -> float:  # log(density times 3 / density), capped like the code
        return min(((r - 1) ** 2 - (r / 3 - 1) ** 2) / (2 * cv * cv), 50.0)

    def evidence(r: float) -> float:  # log((1/2 g(r/3)/3 + 1/2 g(r)) / g(r)), at most 5
        return min(math.log(0.5 + 0.5 / 3 * math.exp(log_ratio(r))), 5.0)

    recent = [
        (tj, _median_ratio(history[:j], tj, a))
        for j, (tj, a, _) in enumerate(history)
        if t - 14 * D < tj <= t
    ]
    odds = sum(
        math.exp(min(sum(evidence(r) for tj, r in recent if tj > t - (b + 1) * D), 50.0))
        for b in range(14)
    )
    c = 1e-3 * odds / (1 + 1e-3 * odds)
    ratio = _median_ratio(history, t, amount)
    return math.log(c * 0.5 / 3) + log_ratio(ratio) - math.log(1 - c * 0.5)


def _median_ratio(history: list[tuple[int, float, str]], t: int, amount: float) -> float:
    """amount / median of the card's amounts in the 30 days before ``t`` (1 without any)."""
    previous = sorted(a for tj, a, _ in history if t - 30 * D < tj <= t)
    if not previous:
        return 1.0
    k = len(previous)
    median = previous[k // 2] if k % 2 else (previous[k // 2 - 1] + previous[k // 2]) / 2
    return amount / median if median > 0 else 1.0


# the habit features keep amounts and ratios as float32: equal to about 1e-7 (the compromise
# posterior sums their log evidence: about 1e-6)
_FLOAT32 = {"CARD_AMOUNT_RATIO_MEDIAN_30DAY", "CARD_MAX_RATIO_14DAY", "CARD_COMPROMISE_LOGIT"}


# each transaction's own ratio is stored when it is screened: an event arriving late does not
# change the ratios of the later ones already screened (only these two features read them)
AS_SCREENED = tuple(
    n
    for n in (*CARD_MEDIAN_FAMILY, *CARD_COMPROMISE_FAMILY)
    if n != "CARD_AMOUNT_RATIO_MEDIAN_30DAY"
)


def assert_card_features(
    row: list[float], expected: dict[str, float], skip: tuple[str, ...] = ()
) -> None:
    for name, value in expected.items():
        if name in skip:
            continue
        rel, tol = (1e-6, 1e-5) if name in _FLOAT32 else (1e-12, 1e-9)
        assert feature(row, name) == pytest.approx(value, rel=rel, abs=tol), name


# --- calendar -------------------------------------------------------------------------------


def test_calendar_doctest() -> None:
    assert doctest.testmod(engine_module).failed == 0


@pytest.mark.parametrize(
    ("when", "weekend", "night", "hour", "weekday"),
    [
        (ms(2018, 4, 1, 0, 0, 31), 1.0, 1.0, 0, 6),  # Sunday just after midnight
        (ms(2018, 4, 1, 23, 59, 59), 1.0, 0.0, 23, 6),  # Sunday's last second
        (ms(2018, 4, 2, 0, 0, 0), 0.0, 1.0, 0, 0),  # Monday midnight
        (ms(2018, 4, 2, 6, 59, 59), 0.0, 1.0, 6, 0),  # hour 6 is night (≤ 6, as the data)
        (ms(2018, 4, 2, 7, 0, 0), 0.0, 0.0, 7, 0),  # hour 7 is not
        (ms(2018, 4, 6, 23, 59, 59), 0.0, 0.0, 23, 4),  # Friday's last second
        (ms(2018, 4, 7, 0, 0, 0), 1.0, 1.0, 0, 5),  # Saturday midnight
        (ms(2018, 4, 7, 12, 0, 0), 1.0, 0.0, 12, 5),
        (ms(2018, 9, 30, 23, 59, 57), 1.0, 0.0, 23, 6),  # the data's last transaction
        (ms(1970, 1, 1, 0, 0, 0), 0.0, 1.0, 0, 3),  # the epoch, a Thursday
    ],
)
def test_calendar(when: int, weekend: float, night: float, hour: int, weekday: int) -> None:
    assert calendar(when) == (weekend, night, hour, weekday)


def test_calendar_every_hour_of_a_week() -> None:
    for h in range(7 * 24):
        when = T0 + 1 * D + h * H + 59 * 60_000  # from Monday 2018-04-02 00:59
        dt = datetime.fromtimestamp(when / 1000, tz=UTC)
        weekend, night, hour, weekday = calendar(when)
        assert (hour, weekday) == (dt.hour, dt.weekday())
        assert weekend == float(dt.weekday() >= 5)
        assert night == float(dt.hour <= 6)


# --- card windows ---------------------------------------------------------------------------


def test_feature_vector_layout() -> None:
    engine = FeatureEngine()
    row = engine.transform("c", "t", 12.5, T0 + 8 * H)
    assert len(row) == N_FEATURES == len(MODEL_FEATURES)
    assert feature(row, "TX_AMOUNT") == 12.5
    assert feature(row, "TX_DURING_WEEKEND") == 1.0  # Sunday
    assert feature(row, "TX_DURING_NIGHT") == 0.0  # 08:00
    assert_card_features(row, naive_card([], T0 + 8 * H, 12.5, "t"))
    assert_no_terminal_labels(row)


def assert_no_terminal_labels(row: list[float]) -> None:
    """A terminal without known labels: zeros, no fraud within the horizon (37 days) and no
    fraud card to count (-1)."""
    special = {"TERMINAL_DAYS_SINCE_FRAUD": 37.0, "TERMINAL_LAST_FRAUD_CARD_FRAUDS": -1.0}
    for name in MODEL_FEATURES:
        if name.startswith("TERMINAL"):
            assert feature(row, name) == special.get(name, 0.0)


@pytest.mark.parametrize("n", [1, 7, 30])
def test_card_window_excludes_exactly_n_days_earlier(n: int) -> None:
    engine = FeatureEngine()
    engine.transform("c", "t", 10.0, T0)
    on_edge = engine.transform("c", "t", 30.0, T0 + n * D)
    assert feature(on_edge, f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW") == 1.0
    assert feature(on_edge, f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW") == 30.0
    other = FeatureEngine()
    other.transform("c", "t", 10.0, T0)
    inside = other.transform("c", "t", 30.0, T0 + n * D - 1)  # one millisecond later
    assert feature(inside, f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW") == 2.0
    assert feature(inside, f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW") == 20.0


def test_card_windows_sequence() -> None:
    engine = FeatureEngine()
    history: list[tuple[int, float, str]] = []
    events = [
        (0, 10.0, "a"),
        (H - 1, 20.0, "b"),
        (H, 30.0, "a"),
        (2 * H, 0.0, "c"),
        (D + H, 40.0, "b"),
        (7 * D, 50.0, "a"),
        (7 * D, 60.0, "a"),
        (30 * D + H, 70.0, "b"),
        (30 * D + H + 1, 80.0, "d"),
        (70 * D, 5.0, "a"),
    ]
    for offset, amount, terminal in events:
        t = T0 + offset
        row = engine.transform("c", terminal, amount, t)
        assert_card_features(row, naive_card(history, t, amount, terminal))
        history.append((t, amount, terminal))
    assert feature(row, "CARD_NEW_TERMINAL") == 1.0  # "a" last seen more than 30 days before
    assert feature(row, "CARD_SECONDS_SINCE_LAST_TX") == 30 * 86400.0


def test_compromise_posterior_rises_with_a_run_of_spikes_and_fades_after_two_weeks() -> None:
    """A card paying about 20 a day for a month, then several payments at 3 times that: the
    posterior of a compromise for an ordinary-looking payment rises with each spike (the
    spikes are the evidence, not the payment), and is back to the quiet level once the spikes
    are 14 days old."""
    rng = random.Random(3)
    engine = FeatureEngine()
    t = T0
    for _ in range(40):
        t += D
        engine.transform("c", "t", round(rng.uniform(15, 25), 2), t)
    quiet = feature(engine.transform("c", "t", 20.0, t + H), "CARD_COMPROMISE_LOGIT")
    levels = []
    for i in range(4):
        engine.transform("c", "t", 60.0 + i, t + (2 + i) * H)
        levels.append(
            feature(engine.transform("c", "t", 20.0, t + (3 + i) * H), "CARD_COMPROMISE_LOGIT")
        )
    assert quiet < levels[0] < levels[1] < levels[2] < levels[3]
    # the same ordinary payment once the spikes are more than 14 days old
    later = engine.transform("c", "t", 20.0, t + 15 * D)
    assert feature(later, "CARD_COMPROMISE_LOGIT") < levels[0]
    # a spike itself scores above the ordinary payment at the same moment
    spike = FeatureEngine()
    plain = FeatureEngine()
    for e in (spike, plain):
        for day in range(1, 41):
            e.transform("c", "t", 20.0 + day % 5, T0 + day * D)
    high = feature(spike.transform("c", "t", 60.0, T0 + 41 * D), "CARD_COMPROMISE_LOGIT")
    low = feature(plain.transform("c", "t", 20.0, T0 + 41 * D), "CARD_COMPROMISE_LOGIT")
    assert high > low


def test_compromise_posterior_needs_four_payments() -> None:
    engine = FeatureEngine()
    for day in range(4):
        row = engine.transform("c", "t", 10.0 * (day + 1), T0 + day * D)
        assert feature(row, "CARD_COMPROMISE_LOGIT") == math.log(1e-3)
    row = engine.transform("c", "t", 30.0, T0 + 4 * D)
    assert feature(row, "CARD_COMPROMISE_LOGIT") != math.log(1e-3)


def test_same_millisecond_transactions_count_in_stream_order() -> None:
    engine = FeatureEngine()
    first = engine.transform("c", "t", 10.0, T0)
    second = engine.transform("c", "t", 30.0, T0)
    assert feature(first, "CUSTOMER_ID_NB_TX_1DAY_WINDOW") == 1.0
    assert feature(second, "CUSTOMER_ID_NB_TX_1DAY_WINDOW") == 2.0
    assert feature(second, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == 20.0
    assert feature(second, "CARD_SECONDS_SINCE_LAST_TX") == 0.0
    assert feature(second, "CARD_NEW_TERMINAL") == 0.0
    assert feature(second, "CARD_AMOUNT_RATIO_30DAY") == 3.0


def test_new_terminal_edge_is_thirty_days() -> None:
    engine = FeatureEngine()
    engine.transform("c", "t", 10.0, T0)
    assert feature(engine.transform("c", "t", 10.0, T0 + 30 * D - 1), "CARD_NEW_TERMINAL") == 0.0
    engine = FeatureEngine()
    engine.transform("c", "t", 10.0, T0)
    assert feature(engine.transform("c", "t", 10.0, T0 + 30 * D), "CARD_NEW_TERMINAL") == 1.0


def test_cards_are_independent() -> None:
    engine = FeatureEngine()
    engine.transform("c1", "t", 100.0, T0)
    row = engine.transform("c2", "t", 10.0, T0 + 1)
    assert feature(row, "CUSTOMER_ID_NB_TX_30DAY_WINDOW") == 1.0
    assert feature(row, "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW") == 10.0
    engine.forget_cards(keep={"c2"})
    assert set(engine.cards) == {"c2"}
    engine.forget_cards()
    assert engine.cards == {}


def test_out_of_order_card_event() -> None:
    engine = FeatureEngine()
    engine.transform("c", "a", 10.0, T0 + 10 * D)
    engine.transform("c", "b", 20.0, T0 + 12 * D)
    late = engine.transform("c", "c", 40.0, T0 + 5 * D)  # arrives after later ones
    # Its own windows end at its own time: it sees nothing later.
    assert_card_features(late, naive_card([], T0 + 5 * D, 40.0, "c"))
    state = engine.cards["c"]
    assert list(state.ts) == [T0 + 5 * D, T0 + 10 * D, T0 + 12 * D]
    # A later event sees the late one in place, as if it had come in order.
    history = [(T0 + 5 * D, 40.0, "c"), (T0 + 10 * D, 10.0, "a"), (T0 + 12 * D, 20.0, "b")]
    row = engine.transform("c", "c", 5.0, T0 + 13 * D)
    assert_card_features(row, naive_card(history, T0 + 13 * D, 5.0, "c"), skip=AS_SCREENED)


def test_shuffled_events_then_in_order_event_match_sorted_stream() -> None:
    rng = random.Random(7)
    events = [
        (T0 + rng.randrange(20 * D), round(rng.uniform(1, 200), 2), f"t{rng.randrange(5)}")
        for _ in range(60)
    ]
    shuffled, ordered = FeatureEngine(), FeatureEngine()
    for t, amount, terminal in rng.sample(events, len(events)):
        shuffled.transform("c", terminal, amount, t)
    for t, amount, terminal in sorted(events, key=lambda e: e[0]):
        ordered.transform("c", terminal, amount, t)
    assert list(shuffled.cards["c"].ts) == list(ordered.cards["c"].ts)
    a = shuffled.transform("c", "t0", 50.0, T0 + 21 * D)
    b = ordered.transform("c", "t0", 50.0, T0 + 21 * D)
    as_screened = [MODEL_FEATURES.index(name) for name in AS_SCREENED]
    keep = [i for i in range(len(a)) if i not in as_screened]
    assert [a[i] for i in keep] == pytest.approx([b[i] for i in keep], rel=1e-12)


def test_ratio_step_counts_stay_prefix_counts_of_the_ratios_out_of_order() -> None:
    """Every out-of-order insert, late ratio and compaction keeps ``levels`` equal to a recount
    of the stored ratios per step (what the 14- and 3-day counts subtract)."""
    rng = random.Random(11)
    engine = FeatureEngine()
    t = T0
    for n in range(400):
        t += rng.randrange(1, 6 * H)
        late = rng.random() < 0.2
        when = t - rng.randrange(1, 3 * D) if late else t
        amount = round(rng.choice([rng.uniform(5, 40), rng.uniform(60, 200)]), 2)
        engine.transform("c", f"t{n % 4}", amount, when)
        state = engine.cards["c"]
        ratios = list(state.ratios)
        assert len(state.levels) == 3 * (len(ratios) + 1)
        for i in range(len(ratios) + 1):
            for k, step in enumerate(RATIO_STEPS):
                assert state.levels[3 * i + k] == sum(r >= step for r in ratios[:i]), (n, i, k)


def test_largest_recent_ratio_cache_gives_what_a_rescan_gives() -> None:
    """The 14-day largest ratio is carried from one transaction to the next (``mpos``);
    with out-of-order events, ties and compactions it equals a rescan at every transaction."""
    rng = random.Random(5)
    cached, rescanned = FeatureEngine(), FeatureEngine()
    t = T0
    for n in range(1500):
        t += rng.randrange(1, 10 * H)
        when = t - rng.randrange(1, 4 * D) if rng.random() < 0.1 else t
        amount = rng.choice([10.0, 20.0, 80.0, round(rng.uniform(1, 300), 2)])  # ties too
        terminal = f"t{n % 3}"
        if "c" in rescanned.cards:
            rescanned.cards["c"].mpos = -1  # no cache: every transaction rescans
        assert cached.transform("c", terminal, amount, when) == rescanned.transform(
            "c", terminal, amount, when
        ), n


# --- compaction -----------------------------------------------------------------------------


# 12 a day checks every row of 90 days against a naive recount: about 20 s, so slow.
@pytest.mark.parametrize("per_day", [0.5, 3, pytest.param(12, marks=pytest.mark.slow)])
def test_compaction_keeps_features_and_bounds_memory(per_day: float) -> None:
    rng = random.Random(int(per_day * 10))
    engine = FeatureEngine()
    history: list[tuple[int, float, str]] = []
    times: list[int] = []
    t = T0
    days = 240 if per_day < 5 else 90  # long enough for many compactions
    largest = 0
    while t < T0 + days * D:
        t += int(rng.expovariate(per_day) * D) + 1
        amount, terminal = round(rng.uniform(0, 150), 2), f"t{rng.randrange(8)}"
        row = engine.transform("card", terminal, amount, t)
        # what the features can see: 30 days, and 30 more before the 14 days of ratios
        recent = history[bisect_right(times, t - 45 * D) :]
        assert_card_features(row, naive_card(recent, t, amount, terminal))
        history.append((t, amount, terminal))
        times.append(t)
        state = engine.cards["card"]
        in_window = len(times) - bisect_right(times, t - 30 * D)
        # Compaction is tried every 32 adds from 128 entries on, and drops the stale entries
        # when more than 64: so at most 64 stale + those aged out since the last try (about
        # as many as the 32 adds for a regular card) beside the 30-day window.
        assert len(state.ts) <= max(128 + 32, in_window + 64 + 64)
        assert len(state.ts) == len(state.cum) - 1
        largest = max(largest, len(state.ts))
    assert len(history) > largest + 100 or per_day < 1  # compaction really happened


def test_card_compact_rebases_prefix_sums() -> None:
    state = CardWindows()
    for i in range(200):
        state.add(T0 + i * H, float(i), terminal_key(0))
    state.compact(T0 + 199 * H + 30 * D - 1)  # all but the last entry are 30 days old
    assert list(state.ts) == [T0 + 199 * H]
    assert list(state.cum) == [0.0, 199.0]
    out: list[float] = []
    state.features(0, T0 + 199 * H, 199.0, terminal_key(0), out)
    assert out[:6] == [1.0, 199.0, 1.0, 199.0, 1.0, 199.0]


# --- terminal label delay -------------------------------------------------------------------


def test_label_younger_than_seven_days_is_not_used() -> None:
    engine = FeatureEngine()
    engine.add_label("T", T0, 1)
    row = engine.transform("c", "T", 10.0, T0 + 7 * D - 1)
    assert_no_terminal_labels(row)


def test_label_exactly_seven_days_old_is_used() -> None:
    engine = FeatureEngine()
    engine.add_label("T", T0, 1)
    row = engine.transform("c", "T", 10.0, T0 + 7 * D)
    for n in (1, 7, 30):
        assert feature(row, f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW") == 1.0
        assert feature(row, f"TERMINAL_ID_RISK_{n}DAY_WINDOW") == 1.0
    assert feature(row, "TERMINAL_NB_FRAUD_30DAY_WINDOW") == 1.0


@pytest.mark.parametrize("n", [1, 7, 30])
def test_terminal_window_excludes_exactly_n_plus_seven_days_earlier(n: int) -> None:
    table = TerminalTable()
    table.add_label("T", T0, 1)
    table.add_label("T", T0 + 1, 0)
    out: list[float] = []
    table.features("T", T0 + (n + 7) * D, out)  # the label at T0 falls out, T0 + 1 ms stays
    assert out[[1, 7, 30].index(n) * 2] == 1.0
    assert out[[1, 7, 30].index(n) * 2 + 1] == 0.0


def test_terminal_features_sequence() -> None:
    table = TerminalTable()
    labels = [(0, 1), (H, 0), (D, 0), (3 * D, 1), (10 * D, 0), (29 * D, 1), (36 * D, 0)]
    for offset, fraud in labels:
        table.add_label("T", T0 + offset, fraud)
    for query in (7 * D, 8 * D, 8 * D + H, 14 * D, 20 * D, 37 * D, 43 * D + 1, 80 * D):
        t = T0 + query
        out: list[float] = []
        table.features("T", t, out)
        expected: list[float] = []
        for n in (1, 7, 30):
            seen = [f for off, f in labels if t - (n + 7) * D < T0 + off <= t - 7 * D]
            expected += [float(len(seen)), sum(seen) / len(seen) if seen else 0.0]
        expected.append(float(sum(seen)))
        expected += naive_run([(T0 + off, f) for off, f in labels], t)
        assert out == pytest.approx(expected, rel=1e-12), query
    out = []
    table.features("unknown", T0 + 80 * D, out)
    assert out == [0.0] * 7 + [0.0, 0.0, 37.0, 0.0, -1.0]


def naive_run(labels: list[tuple[int, int]], t: int) -> list[float]:
    """The run features by brute force: the known labels of the last 30 days (before the
    7-day delay), the frauds in a row at their end, days since the latest known fraud; then
    that fraud's amount and card count, which labels without a card leave at 0 and -1."""
    known = sorted((tj, f) for tj, f in labels if t - 37 * D < tj <= t - 7 * D)
    frauds = [tj for tj, f in known if f]
    if not frauds:
        return [0.0, 0.0, 37.0, 0.0, -1.0]
    run = 0
    while run < len(known) and known[len(known) - 1 - run][1] == 1:
        run += 1
    span = (known[-1][0] - known[len(known) - run][0]) / D if run else 0.0
    return [float(run), span, (t - 7 * D - frauds[-1]) / D, 0.0, -1.0]


Label = tuple[str, int, int, str, float]  # terminal, time, fraud, card, amount


def naive_origin(labels: list[Label], terminal: str, t: int) -> list[float]:
    """The fraud-origin features by brute force: the terminal's latest fraud known at ``t``
    (within 30 days before the delay), its amount, and its card's frauds in the 30 days before
    it (whatever the terminal; all of them are known by ``t``)."""
    frauds = sorted(
        (tj, card, amount)
        for term, tj, f, card, amount in labels
        if term == terminal and f and t - 37 * D < tj <= t - 7 * D
    )
    if not frauds:
        return [0.0, -1.0]
    tf, card, amount = frauds[-1]
    before = [tj for _, tj, f, c, _ in labels if f and c == card and tf - 30 * D <= tj < tf]
    return [amount, float(len(before))]


def _origin_labels(seed: int) -> list[Label]:
    """Labels of 6 terminals and 8 cards over 90 days, one in six a fraud, in random order."""
    rng = random.Random(seed)
    labels = [
        (
            f"T{rng.randrange(6)}",
            T0 + rng.randrange(90 * D),
            int(rng.random() < 1 / 6),
            f"c{rng.randrange(8)}",
            round(rng.uniform(1, 300), 2),
        )
        for _ in range(1500)
    ]
    return labels


@pytest.mark.parametrize("in_order", [True, False])
def test_fraud_origin_matches_brute_force(in_order: bool) -> None:
    labels = _origin_labels(5)
    fed = sorted(labels, key=lambda x: x[1]) if in_order else labels
    # in time order the table compacts itself as it goes; out of order it must not
    table = TerminalTable(auto_compact=in_order)
    for terminal, tj, fraud, card, amount in fed:
        table.add_label(terminal, tj, fraud, card, amount)
    last = max(tj for _, tj, *_ in labels)
    for k in range(40):
        t = last + 7 * D - k * D // 2 if in_order else T0 + 7 * D + k * 2 * D
        for terminal in ("T0", "T3", "T5", "none"):
            out: list[float] = []
            table.features(terminal, t, out)
            assert out[10:] == naive_origin(labels, terminal, t), (k, terminal)


def test_fraud_origin_survives_save_load_and_restore_older() -> None:
    from streams.checkpoint.codec import StateReader, StateWriter

    labels = sorted(_origin_labels(9), key=lambda x: x[1])
    full = TerminalTable(auto_compact=False)
    for label in labels:
        full.add_label(*label)
    w = StateWriter()
    full.save_state(w, "t")
    loaded = TerminalTable()
    loaded.load_state(StateReader(w.encode()), "t")
    # a table that only holds the last 30 days, completed from the full one
    cut = labels[0][1] + 60 * D
    recent = TerminalTable(auto_compact=False)
    for label in labels:
        if label[1] > cut:
            recent.add_label(*label)
    recent.restore_older(full, labels[-1][1])
    for t in (cut + 8 * D, labels[-1][1] + D, labels[-1][1] + 7 * D):
        for terminal in ("T0", "T1", "T2", "T4"):
            want: list[float] = []
            full.features(terminal, t, want)
            assert want[10:] == naive_origin(labels, terminal, t)
            for table in (loaded, recent):
                got: list[float] = []
                table.features(terminal, t, got)
                assert got == want, (t, terminal)


def test_terminal_run_of_frauds() -> None:
    table = TerminalTable(auto_compact=False)  # queried back in time after every label
    rng = random.Random(11)
    labels: list[tuple[int, int]] = []
    t = T0
    for day in range(60):  # genuine, then a compromise (all fraud) from day 20 to 40
        for _ in range(rng.randrange(0, 4)):
            t = T0 + day * D + rng.randrange(D)
            labels.append((t, 1 if 20 <= day < 40 else int(rng.random() < 0.02)))
    for tj, f in labels:
        table.add_label("T", tj, f)
    for query_day in range(0, 75):
        now = T0 + query_day * D + 12 * H
        out: list[float] = []
        table.features("T", now, out)
        assert out[7:] == pytest.approx(naive_run(labels, now), rel=1e-12), query_day


def test_out_of_order_labels_match_in_order() -> None:
    rng = random.Random(3)
    labels = [(T0 + rng.randrange(40 * D), int(rng.random() < 0.3)) for _ in range(300)]
    shuffled, ordered = TerminalLabels(), TerminalLabels()
    for t, fraud in labels:
        shuffled.add(t, fraud)
    for t, fraud in sorted(labels, key=lambda x: x[0]):
        ordered.add(t, fraud)
    assert list(shuffled.ts) == list(ordered.ts)
    assert list(shuffled.frauds) == list(ordered.frauds)


def test_terminal_compact_keeps_recent_labels() -> None:
    state = TerminalLabels()
    for i in range(2000):
        state.add(T0 + i * H, i % 2)
    before = TerminalTable()
    before.terminals["T"] = state
    out_before: list[float] = []
    now = T0 + 2000 * H + 7 * D
    before.features("T", now, out_before)
    state.compact(now)
    # kept: labels after now − 37 days = hour 2000 − 720, i.e. hours 1281 .. 1999
    assert len(state.ts) == 719 and len(state.frauds) == len(state.ts) + 1
    out_after: list[float] = []
    before.features("T", now, out_after)
    assert out_after == out_before


def test_terminal_memory_is_bounded() -> None:
    engine = FeatureEngine()
    terminals = [f"T{i}" for i in range(50)]
    for i in range(200_000):  # 1,000 labels a day for 200 days: 20 a day per terminal
        engine.add_label(terminals[i % 50], T0 + i * 86_400, 0)
    longest = max(len(s.ts) for s in engine.terminals.terminals.values())
    assert longest <= 37 * 20 + 256 + 64  # the 37-day horizon + slack


def test_card_terminal_keys_match_only_whole_entries() -> None:
    """Keys are fixed-width with a marked first byte: the bytes across two entries' boundary
    never read as a third terminal's key, so "new terminal" sees only the window's own ids."""
    keys = [terminal_key(n) for n in (0, 1, 127, 128, 16_383, 16_384, (1 << 28) - 1)]
    assert len(set(keys)) == len(keys) and all(len(k) == 4 for k in keys)
    for a in keys:
        for b in keys:
            joined = a + b
            assert all(joined[i : i + 4] not in keys for i in range(1, 4))
    with pytest.raises(OverflowError):
        terminal_key(1 << 28)
    engine = FeatureEngine()
    for n in range(300):  # many terminals: keys with several non-zero digits
        row = engine.transform("c", f"t{n}", 1.0, T0 + n * H)
        assert feature(row, "CARD_NEW_TERMINAL") == 1.0
    again = engine.transform("c", "t150", 1.0, T0 + 300 * H)
    assert feature(again, "CARD_NEW_TERMINAL") == 0.0
