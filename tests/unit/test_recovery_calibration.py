"""The checkpointed calibrations give the same result however a stream is batched."""

from __future__ import annotations

import numpy as np
import pytest

from streams.recovery.calibration import CheckpointedValues, StreamFlagPolicy
from streams.stage1.policy import FlagPolicy


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


def test_rank_is_against_the_window_at_the_last_checkpoint():
    window = CheckpointedValues(3, every=2)
    window.add(np.array([5.0, 1.0]))  # checkpoint at 2: reference [1, 5]
    assert window.rank(np.array([3.0])).tolist() == [0.5]
    window.add(np.array([9.0, 7.0, 8.0]))  # checkpoint at 4: last 3 before it: [1, 9, 7]
    assert window.rank(np.array([8.0])).tolist() == [2 / 3]


def test_budget_policy_does_not_depend_on_batches():
    rng = np.random.default_rng(7)
    prob = rng.random(9000) ** 4 * 0.4  # below the absolute threshold: only the budget flags
    anomaly = np.zeros(len(prob))
    results = []
    for sizes in ([9000], [100] * 90, [1, 4999, 4000]):
        policy = StreamFlagPolicy(FlagPolicy(0.5, 0.999, budget=0.05), window=5000)
        out, pos = [], 0
        for size in sizes:
            sl = slice(pos, pos + size)
            out.append(policy.flag(np.zeros(size, dtype=bool), prob[sl], anomaly[sl]))
            pos += size
        results.append(np.concatenate(out))
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])
    # no budget before the reference holds 1,000 values; then about the top 5 %
    assert not results[0][:1000].any()
    assert 0.02 < results[0][2000:].mean() < 0.12
