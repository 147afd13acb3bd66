"""PSI monitors on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.observability.drift import CategoricalPsiMonitor, PsiMonitor, psi_from_counts


def hand_psi(expected: list[float], actual: list[float]) -> float:
    return sum((a - e) * math.log(a / e) for e, a in zip(expected, actual, strict=True))


def test_psi_from_counts_identical_is_zero() -> None:
    assert psi_from_counts([10, 20, 70], [1, 2, 7]) == pytest.approx(0.0)


def test_psi_from_counts_matches_hand_computation() -> None:
    # 50/50 → 90/10: (0.9-0.5)·ln(1.8) + (0.1-0.5)·ln(0.2) ≈ 0.8789
    assert psi_from_counts([50, 50], [90, 10]) == pytest.approx(hand_psi([0.5, 0.5], [0.9, 0.1]))
    assert psi_from_counts([50, 50], [90, 10]) == pytest.approx(0.8789, abs=1e-4)


def test_psi_from_counts_empty_bin_is_finite_and_large() -> None:
    value = psi_from_counts([50, 50, 0], [0, 50, 50])
    assert math.isfinite(value)
    assert value > 1.0


def test_psi_from_counts_rejects_mismatched_or_empty() -> None:
    with pytest.raises(ValueError):
        psi_from_counts([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        psi_from_counts([0, 0], [1, 1])


def test_numeric_none_until_reference_and_window_are_full() -> None:
    m = PsiMonitor(reference_size=100, window_size=50)
    m.observe_many(np.linspace(0, 1, 100))
    assert m.reference_ready
    assert m.psi() is None
    m.observe_many(np.linspace(0, 1, 49))
    assert m.psi() is None
    m.observe(0.5)
    assert m.psi() is not None


def test_numeric_identical_values_give_zero() -> None:
    values = np.linspace(0.0, 1.0, 1000)
    m = PsiMonitor(reference_size=1000, window_size=1000, bins=10)
    m.observe_many(values)
    m.observe_many(values[::-1])  # same values, another order
    assert m.psi() == pytest.approx(0.0, abs=1e-12)


def test_numeric_same_distribution_is_near_zero() -> None:
    rng = np.random.default_rng(7)
    m = PsiMonitor(reference_size=5000, window_size=5000)
    m.observe_many(rng.beta(2, 8, 5000))
    m.observe_many(rng.beta(2, 8, 5000))
    psi = m.psi()
    assert psi is not None
    assert psi < 0.02


def test_numeric_shifted_distribution_is_major_shift() -> None:
    rng = np.random.default_rng(7)
    m = PsiMonitor(reference_size=5000, window_size=5000)
    m.observe_many(rng.normal(0.0, 1.0, 5000))
    m.observe_many(rng.normal(1.0, 1.0, 5000))
    psi = m.psi()
    assert psi is not None
    assert psi > 0.25


def test_numeric_hand_made_two_bins() -> None:
    # reference 50×0.1, 50×0.9 → one edge at the median 0.5; window 90/10
    m = PsiMonitor(reference_size=100, window_size=100, bins=2)
    m.observe_many([0.1] * 50 + [0.9] * 50)
    assert m.edges is not None and m.edges.tolist() == [0.5]
    m.observe_many([0.1] * 90 + [0.9] * 10)
    assert m.psi() == pytest.approx(hand_psi([0.5, 0.5], [0.9, 0.1]))


def test_numeric_constant_reference_still_sees_a_shift() -> None:
    m = PsiMonitor(reference_size=100, window_size=100)
    m.observe_many([0.0] * 100)  # every quantile ties: one edge, two open bins
    m.observe_many([0.0] * 100)
    assert m.psi() == pytest.approx(0.0)
    m.observe_many([0.7] * 100)
    psi = m.psi()
    assert psi is not None and psi > 5


def test_numeric_window_slides_back_to_stable() -> None:
    rng = np.random.default_rng(1)
    m = PsiMonitor(reference_size=2000, window_size=1000)
    m.observe_many(rng.uniform(0, 1, 2000))
    m.observe_many(rng.uniform(0.5, 1.5, 1000))
    shifted = m.psi()
    assert shifted is not None and shifted > 0.25
    for _ in range(5):  # small batches wrap the ring buffer
        m.observe_many(rng.uniform(0, 1, 230))
    back = m.psi()
    assert back is not None and back < 0.05
    assert m.window_count == 1000


def test_numeric_reference_spills_into_window_within_one_batch() -> None:
    m = PsiMonitor(reference_size=10, window_size=5)
    m.observe_many(list(range(15)))
    assert m.reference_ready
    assert m.window_count == 5


def test_numeric_set_reference_and_fixed_edges() -> None:
    m = PsiMonitor(window_size=4, edges=[0.5])
    m.set_reference([0.1, 0.2, 0.8, 0.9])
    m.observe_many([0.1, 0.2, 0.3, 0.9])
    assert m.psi() == pytest.approx(hand_psi([0.5, 0.5], [0.75, 0.25]))


def test_numeric_ignores_nan_and_reset_relearns() -> None:
    m = PsiMonitor(reference_size=4, window_size=4, bins=2)
    m.observe_many([0.1, float("nan"), 0.2, 0.8, 0.9])
    assert m.reference_ready
    assert m.window_count == 0
    m.reset()
    assert not m.reference_ready
    assert m.psi() is None


def test_categorical_decision_mix() -> None:
    m = CategoricalPsiMonitor(reference_size=100, window_size=100)
    m.observe_counts({"approve": 90, "review": 8, "decline": 2})
    m.observe_counts({"approve": 90, "review": 8, "decline": 2})
    assert m.psi() == pytest.approx(0.0)
    m.observe_counts({"approve": 60, "review": 30, "decline": 10})
    psi = m.psi()
    assert psi == pytest.approx(hand_psi([0.9, 0.08, 0.02], [0.6, 0.3, 0.1]))
    assert psi is not None and psi > 0.25


def test_categorical_new_category_in_window() -> None:
    m = CategoricalPsiMonitor(reference_size=4, window_size=4)
    m.observe_many(["a", "a", "b", "b"])
    m.observe_many(["a", "a", "b", "c"])
    eps = 1e-4
    expected = hand_psi([0.5, 0.5, eps], [0.5, 0.25, 0.25])
    assert m.psi() == pytest.approx(expected)


def test_categorical_flag_rate_share_and_shift() -> None:
    m = CategoricalPsiMonitor(reference_size=1000, window_size=1000)
    m.observe_counts({True: 20, False: 980})  # 2 % flagged
    m.observe_counts({True: 20, False: 980})
    assert m.share(True) == pytest.approx(0.02)
    small = m.psi()
    assert small is not None and small < 0.01
    m.observe_counts({True: 150, False: 850})  # 15 % flagged
    assert m.share(True) == pytest.approx(0.15)
    big = m.psi()
    assert big is not None and big > 0.25


def test_categorical_counts_split_keeps_the_mix() -> None:
    # one batch fills the reference and the window: the shuffle keeps both ~50/50
    m = CategoricalPsiMonitor(reference_size=1000, window_size=1000)
    m.observe_counts({"x": 1000, "y": 1000})
    psi = m.psi()
    assert psi is not None and psi < 0.02


def test_categorical_set_reference_from_counts() -> None:
    m = CategoricalPsiMonitor(window_size=2)
    m.set_reference({"approve": 3, "decline": 1})
    m.observe_many(["approve", "decline"])
    assert m.psi() == pytest.approx(hand_psi([0.75, 0.25], [0.5, 0.5]))
    with pytest.raises(ValueError):
        m.set_reference({})


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        PsiMonitor(reference_size=0)
    with pytest.raises(ValueError):
        PsiMonitor(bins=1)


def test_module_doctest() -> None:
    import doctest

    from streams.observability import drift

    result = doctest.testmod(drift)
    assert result.attempted > 0
    assert result.failed == 0
