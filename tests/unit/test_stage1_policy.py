"""Stage 1's flag policy: calibrations that do not depend on batching, a budget the model never
exceeds, and a recall controller that sets the budget from the labelled frauds."""

from __future__ import annotations

import numpy as np
import pytest

from streams.online.window import CheckpointedValues
from streams.stage1.policy import FlagPolicy, RecallController


def _batched(n: int, rng: np.random.Generator) -> list[int]:
    cuts, pos = [], 0
    while pos < n:
        step = int(rng.integers(1, 2500))
        cuts.append(min(step, n - pos))
        pos += step
    return cuts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rank_does_not_depend_on_batches(seed):
    rng = np.random.default_rng(seed)
    stream = rng.random(12_345)
    results = []
    for sizes in ([len(stream)], [1] * 3000 + [len(stream) - 3000], _batched(len(stream), rng)):
        window = CheckpointedValues(4000, every=700)
        out, pos = [], 0
        for size in sizes:
            batch = stream[pos : pos + size]
            out.append(window.rank(batch))
            window.add(batch)
            pos += size
        results.append(np.concatenate(out))
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])


@pytest.mark.parametrize("seed", [4, 5])
def test_each_reference_is_the_sorted_window_before_its_checkpoint(seed):
    """The slid references equal a sort of the window, duplicates and all, however batched."""
    rng = np.random.default_rng(seed)
    stream = np.round(rng.random(9000), 2)  # many equal values
    window = CheckpointedValues(2000, every=500)
    pos = 0
    for size in _batched(len(stream), rng):
        batch = stream[pos : pos + size]
        for a, _, ref in window.segments(batch):
            # every 500, and every 100 before the first
            checkpoint = (pos + a) // 100 * 100 if pos + a < 500 else (pos + a) // 500 * 500
            expected = np.sort(stream[max(0, checkpoint - 2000) : checkpoint])
            assert np.array_equal(ref, expected), (pos, a)
        window.add(batch)
        pos += size


def test_rank_is_against_the_window_at_the_last_checkpoint():
    window = CheckpointedValues(3, every=2)
    window.add(np.array([5.0, 1.0]))  # checkpoint at 2: reference [1, 5]
    assert window.rank(np.array([3.0])).tolist() == [0.5]
    window.add(np.array([9.0, 7.0, 8.0]))  # checkpoint at 4: last 3 before it: [1, 9, 7]
    assert window.rank(np.array([8.0])).tolist() == [2 / 3]


def _run(policy: FlagPolicy, prob, sizes, rule=None, anomaly=None, posterior=None):
    rule = np.zeros(len(prob), dtype=bool) if rule is None else rule
    anomaly = np.zeros(len(prob)) if anomaly is None else anomaly
    flags, shares, pos = [], [], 0
    for size in sizes:
        sl = slice(pos, pos + size)
        post = None if posterior is None else posterior[sl]
        flagged, share = policy.flag(rule[sl], prob[sl], anomaly[sl], posterior=post)
        flags.append(flagged)
        shares.append(share)
        pos += size
    return np.concatenate(flags), np.concatenate(shares)


def _fixed(budget: float) -> RecallController:
    return RecallController(floor=budget, maximum=budget)


@pytest.mark.parametrize("by_posterior", [False, True])
def test_budget_policy_does_not_depend_on_batches(by_posterior):
    rng = np.random.default_rng(7)
    prob = rng.random(9000) ** 4
    posterior = rng.normal(-8, 3, 9000) if by_posterior else None
    rule = rng.random(9000) < 0.02  # rules forward some: FORWARDED in the reference
    results = []
    for sizes in ([9000], [100] * 90, [1, 4999, 4000], [1500] * 6):
        policy = FlagPolicy(0.999, _fixed(0.05), window=5000)
        results.append(_run(policy, prob, sizes, rule=rule, posterior=posterior))
    for flags, shares in results[1:]:
        assert np.array_equal(results[0][0], flags) and np.array_equal(results[0][1], shares)
    flags = results[0][0]
    # no model forwards before the reference holds 200 values; ranked by percentiles, nor
    # while it holds only rows ranked before the percentiles had a window (NOT_RANKED); then
    # about 5 % in all, whatever the signals
    start = 400 if by_posterior else 200
    assert np.array_equal(flags[:start], rule[:start])
    assert not np.array_equal(flags[: start + 200], rule[: start + 200])
    assert 0.03 < flags[2000:].mean() <= 0.055


def test_a_high_posterior_is_forwarded_whatever_the_classifier_says():
    """The payments of a card the posterior finds compromised go to stage 2 even when the
    classifier ranks them in the middle of the traffic; the total stays at the budget."""
    rng = np.random.default_rng(9)
    n = 20_000
    prob, posterior = rng.random(n), rng.normal(-8, 2, n)
    spikes = np.zeros(n, dtype=bool)
    spikes[5000::100] = True  # 1 % of rows: an ordinary probability, a posterior above the rest
    prob[spikes], posterior[spikes] = 0.5, 10.0
    both = FlagPolicy(0.999, _fixed(0.05), window=5000)
    flags, shares = _run(both, prob, posterior=posterior, sizes=[500] * 40)
    assert flags[spikes].all() and (shares[spikes] < 0.05).all()  # within the budget
    assert 0.045 <= flags[5000:].mean() <= 0.055
    alone = FlagPolicy(0.999, _fixed(0.05), window=5000, rank_by_posterior=False)
    flags, _ = _run(alone, prob, posterior=posterior, sizes=[500] * 40)
    assert not flags[spikes].any()  # the classifier alone ranks them at its median


def test_a_checkpoint_ranked_another_way_is_refused():
    from streams.checkpoint.codec import StateReader, StateWriter
    from streams.errors import StateError

    rng = np.random.default_rng(10)
    prob, posterior = rng.random(3000), rng.normal(size=3000)
    policy = FlagPolicy(0.999, _fixed(0.05), window=2000)
    _run(policy, prob[:2000], [2000], posterior=posterior[:2000])
    w = StateWriter()
    policy.save_state(w, "p")
    restored = FlagPolicy(0.999, _fixed(0.05), window=2000)
    restored.load_state(StateReader(w.encode()), "p")
    # the restored policy decides the rest exactly as the one that went on
    assert np.array_equal(
        _run(policy, prob[2000:], [1000], posterior=posterior[2000:])[0],
        _run(restored, prob[2000:], [1000], posterior=posterior[2000:])[0],
    )
    other = FlagPolicy(0.999, _fixed(0.05), window=2000, rank_by_posterior=False)
    with pytest.raises(StateError, match="ranked by classifier"):
        other.load_state(StateReader(w.encode()), "p")


def test_bursts_are_capped_in_every_window_of_5000_and_of_1000():
    # a model that suddenly scores everything above all it scored before (it learnt a label)
    rng = np.random.default_rng(5)
    prob = np.concatenate([0.1 * rng.random(5000), 0.5 + 0.4 * rng.random(15000)])
    policy = FlagPolicy(0.999, _fixed(0.05), window=5000, every=1000)
    flags, _ = _run(policy, prob, [700] * 28 + [400])
    for window in (5000, 1000):  # BURST_WINDOW, SHORT_BURST_WINDOW
        counts = np.convolve(flags.astype(int), np.ones(window, dtype=int), mode="valid")
        limit = int(1.4 * 0.05 * window)  # BURST times the maximum forward share
        assert counts.max() <= limit
    assert counts.max() == limit  # the burst reaches the short cap and stops there
    # once the reference holds the new scores, the quantile brings it back to the budget
    assert flags[-5000:].mean() == pytest.approx(0.05, abs=0.01)


def test_a_slow_start_is_not_caught_up_in_a_burst():
    """A model that forwards nothing for its first 3,000 transactions (all scores tied), then
    ranks everything above its past: the 5,000 cap alone would let it forward 14 % of 4,000 in
    a few hundred transactions; the 1,000 cap holds every 1,000 to 14 %."""
    rng = np.random.default_rng(6)
    prob = np.concatenate([np.zeros(3000), 0.5 + 0.5 * rng.random(7000)])
    policy = FlagPolicy(0.999, _fixed(0.10), window=5000, every=1000)
    flags, _ = _run(policy, prob, [500] * 20)
    counts = np.convolve(flags.astype(int), np.ones(1000, dtype=int), mode="valid")
    assert not flags[:3000].any() and counts.max() <= 140


def test_rules_and_anomalies_fill_the_budget_first():
    rng = np.random.default_rng(3)
    prob = rng.random(20_000)
    rule = np.zeros(len(prob), dtype=bool)
    rule[::25] = True  # rules forward 4 % of traffic
    policy = FlagPolicy(0.999, _fixed(0.10), window=5000)
    flags, shares = _run(policy, prob, [500] * 40, rule=rule)
    assert 0.09 <= flags[5000:].mean() <= 0.105  # 4 % by rules, the rest by the model
    assert (shares[rule] == 0).all()  # a rule-forwarded transaction counts as ranked first
    # when rules alone forward more than the budget, the model adds nothing
    policy = FlagPolicy(0.999, _fixed(0.03), window=5000)
    flags, _ = _run(policy, prob, [500] * 40, rule=rule)
    assert np.array_equal(flags[5000:], rule[5000:])


def test_the_controller_budget_is_the_share_that_reaches_the_target():
    controller = RecallController(target=0.9, floor=0.01, maximum=0.10, min_frauds=10)
    assert controller.budget == 0.10  # nothing labelled yet: the maximum
    shares = np.linspace(0.0, 0.06, 20)  # 20 frauds ranked within the top 6 %
    for share in shares:
        controller.observe(float(share), forwarded=True)
    # 90 % of the 20: the 18th smallest share
    assert controller.budget == pytest.approx(shares[17])
    assert controller.recall == 1.0 and not controller.at_maximum
    # frauds no budget up to the maximum reaches: the budget goes to the maximum and stays
    for _ in range(5):
        controller.observe(0.5, forwarded=False)
    assert controller.budget == 0.10 and controller.at_maximum
    assert controller.recall == pytest.approx(20 / 25)
    # frauds that all rank first: down to the floor
    for _ in range(200):
        controller.observe(0.0, forwarded=True)
    assert controller.budget == 0.01


def test_the_controller_refuses_a_floor_above_the_maximum():
    with pytest.raises(ValueError, match="floor"):
        RecallController(floor=0.2, maximum=0.1)


def test_the_controller_leaves_out_frauds_of_cards_known_compromised():
    """A fraud counts unless a fraud of its card had a published label before it (the
    protocol's known cards); a card is forgotten 30 days after its first label."""
    controller = RecallController(target=0.9, floor=0.01, maximum=0.10, min_frauds=1)
    day = 86_400_000
    controller.observe(0.01, True, card=7, ts_ms=0, known_ms=7 * day)  # the first: counts
    controller.observe(0.5, False, card=7, ts_ms=6 * day, known_ms=13 * day)  # before 7 d: counts
    controller.observe(0.5, False, card=7, ts_ms=8 * day, known_ms=15 * day)  # known: left out
    controller.observe(0.5, False, card=8, ts_ms=8 * day, known_ms=15 * day)  # another card
    assert controller.known_card_frauds == 1
    assert controller.recall == pytest.approx(1 / 3)
    # 30 days after its first label the card is forgotten: its next fraud counts again
    controller.observe(0.02, True, card=7, ts_ms=38 * day, known_ms=45 * day)
    assert controller.known_card_frauds == 1 and controller.recall == pytest.approx(2 / 4)


def test_the_controller_keeps_its_known_cards_in_a_checkpoint():
    from streams.checkpoint.codec import StateReader, StateWriter

    day = 86_400_000
    controller = RecallController(min_frauds=1)
    controller.observe(0.0, True, card=7, ts_ms=0, known_ms=7 * day)
    controller.observe(0.0, True, card=7, ts_ms=8 * day, known_ms=15 * day)
    w = StateWriter()
    controller.save_state(w, "c")
    restored = RecallController(min_frauds=1)
    restored.load_state(StateReader(w.encode()), "c")
    assert restored.known_card_frauds == 1 and restored.budget == controller.budget
    restored.observe(0.3, False, card=7, ts_ms=9 * day, known_ms=16 * day)
    assert restored.known_card_frauds == 2  # card 7 is still known after the restore


@pytest.mark.parametrize("seed", [11, 12])
def test_a_restored_window_sorts_the_same_reference_again(seed):
    """A checkpoint holds the buffer, not the sorted reference: the restore sorts it again from
    the buffer, the same array the sliding merges built, at every point of the stream."""
    from streams.checkpoint.codec import StateReader, StateWriter

    rng = np.random.default_rng(seed)
    stream = np.round(rng.random(9000), 2)
    stream[rng.random(9000) < 0.01] = np.nan
    window = CheckpointedValues(2000, every=500)
    pos = 0
    for size in _batched(len(stream), rng):
        window.add(stream[pos : pos + size])
        pos += size
        w = StateWriter()
        window.save_state(w, "v")
        restored = CheckpointedValues(2000, every=500)
        restored.load_state(StateReader(w.encode()), "v")
        assert np.array_equal(restored._ref, window._ref, equal_nan=True), pos
        probe = rng.random(300)
        assert np.array_equal(restored.rank(probe), window.rank(probe))
