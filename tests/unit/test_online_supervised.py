"""The online classifier: batch scores equal river's, and the delayed-label cache."""

from __future__ import annotations

import numpy as np

from streams.features.names import MODEL_FEATURES
from streams.online.supervised import OnlineClassifier, card_key


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 50, size=(n, len(MODEL_FEATURES)))


def test_predict_batch_equals_river() -> None:
    clf = OnlineClassifier(cache_size=100)
    X = rows(60)
    ids = [f"t{i}" for i in range(60)]
    clf.remember(ids, X)
    for i in range(0, 60, 2):
        assert clf.learn_label(ids[i], fraud=i % 4 == 0) or i % 4 != 0
    batch = clf.predict_batch(X[:10])
    one = [clf.predict_one(row) for row in X[:10].tolist()]
    assert np.allclose(batch, one, rtol=1e-9, atol=1e-12)


def test_learns_the_cached_float32_row_once() -> None:
    clf = OnlineClassifier(cache_size=10)
    X = rows(3)
    clf.remember(["a", "b", "c"], X)
    assert clf.cached() == 3
    assert clf.learn_label("b", fraud=True)
    assert not clf.learn_label("b", fraud=True)  # already used
    assert clf.missed_labels == 1 and clf.learned == 1
    scaler = clf.model.steps["StandardScaler"]
    name = MODEL_FEATURES[1]
    assert scaler.means[name] == float(np.float32(X[1, 1]))


def test_oldest_rows_go_first_and_redelivered_keep_the_newest() -> None:
    clf = OnlineClassifier(cache_size=4)
    clf.remember(["a", "b", "c"], rows(3))
    clf.remember(["a", "d", "e"], rows(3, seed=1))  # "a" redelivered; ring wraps over "a", "b"
    assert clf.cached() == 4  # a (newest copy), c, d, e
    assert clf.learn_label("c", fraud=True)
    assert clf.learn_label("a", fraud=True)
    assert not clf.learn_label("b", fraud=True)  # evicted
    clf.remember([f"x{i}" for i in range(9)], rows(9, seed=2))  # more than the cache holds
    assert clf.cached() == 4 and all(not clf.learn_label(t, True) for t in ("d", "e", "x4"))
    assert all(clf.learn_label(f"x{i}", True) for i in range(5, 9))


def test_a_fraud_label_tells_the_controller_its_card_time_and_publication():
    clf = OnlineClassifier(cache_size=8)
    seen: list[tuple[float, bool, int, int, int]] = []
    clf.on_fraud = lambda *args: seen.append(args)
    slots = clf.remember(
        ["a", "b"],
        rows(2),
        np.array([card_key("c1"), card_key("c2")], np.uint32),
        np.array([1_000, 2_000], np.int64),
    )
    clf.mark(slots, np.array([0.25, 0.0]), np.array([False, True]))
    assert clf.learn_label("b", fraud=True, known_ms=9_000)
    assert clf.learn_label("a", fraud=True)  # no publication time: the transaction's
    assert seen == [
        (0.0, True, card_key("c2"), 2_000, 9_000),
        (0.25, False, card_key("c1"), 1_000, 1_000),
    ]
