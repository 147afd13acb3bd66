"""The compiled card steps (``streams/features/_card.pyx``) against their reference, the
``CardWindows`` methods: the same feature bytes and the same state, on a stream with late
events, ties, repeated terminals and compactions."""

from __future__ import annotations

import random
import sys
from array import array

import pytest

import streams.features.engine as engine_module
from streams.features import card
from streams.features.card import CardWindows
from streams.features.engine import FeatureEngine

D = 86_400_000
T0 = 1_522_540_800_000

pytestmark = pytest.mark.skipif(
    not card.COMPILED, reason="the package was built without its compiled card steps"
)


def stream(seed: int, n: int) -> list[tuple[str, str, float, int]]:
    rng = random.Random(seed)
    rows, t = [], T0
    for _ in range(n):
        t += rng.randrange(0, 40 * 60_000)  # ties at the same millisecond too
        when = t - rng.randrange(1, 5 * D) if rng.random() < 0.03 else t
        amount = rng.choice([10.0, 20.0, 0.0, round(rng.lognormvariate(3.5, 1.0), 2)])
        if rng.random() < 0.01:
            amount *= 5
        rows.append((f"c{rng.randrange(60)}", f"t{rng.randrange(40)}", amount, when))
    return rows


def run(rows: list[tuple[str, str, float, int]]) -> tuple[bytes, FeatureEngine]:
    engine, flat = FeatureEngine(), []
    for c, terminal, amount, when in rows:
        engine.transform_into(c, terminal, amount, when, flat)
    return array("d", flat).tobytes(), engine


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_steps_give_the_reference_bytes_and_state(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = stream(seed, 20_000)
    compiled_bytes, compiled = run(rows)
    monkeypatch.setattr(engine_module, "add_entry", CardWindows.add)
    monkeypatch.setattr(engine_module, "entry_features", CardWindows.features)
    reference_bytes, reference = run(rows)
    assert compiled_bytes == reference_bytes
    assert compiled.cards.keys() == reference.cards.keys()
    compacted = 0
    for key, state in compiled.cards.items():
        other = reference.cards[key]
        for name in CardWindows.__slots__:
            mine, theirs = getattr(state, name), getattr(other, name)
            assert type(mine) is type(theirs), (key, name)
            assert mine == theirs, (key, name)
            # grown alike: the same allocation, so the same memory per card
            assert sys.getsizeof(mine) == sys.getsizeof(theirs), (key, name)
        compacted += state.ts[0] > T0 + D
    assert compacted > 0  # compactions happened (the 20,000 rows span about 9 months)


def test_a_late_event_goes_through_the_reference_and_the_next_one_back() -> None:
    engine = FeatureEngine()
    for i in range(10):
        engine.transform("c", "t", 10.0 + i, T0 + i * D)
    state = engine.cards["c"]
    assert state.whi == 10  # in order: the compiled step kept the window
    engine.transform("c", "t", 99.0, T0 + 3 * D + 1)  # late: inserted, the window dropped
    assert list(state.ts) == sorted(state.ts) and state.ts[4] == T0 + 3 * D + 1
    engine.transform("c", "u", 12.0, T0 + 11 * D)  # rebuilt by the reference, then kept
    assert state.whi == len(state.ts) == 12
