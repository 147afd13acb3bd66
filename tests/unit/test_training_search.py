"""The stage-2 search (``streams.training.search``) and the capacity thresholds
(``streams.training.policy``)."""

import numpy as np
import pytest
import xgboost as xgb

from streams.errors import DataError
from streams.training import search as search_mod
from streams.training.policy import capacity_thresholds, policy_outcome
from streams.training.search import SearchSpace, resolve_weight, search_and_fit, validation_days

NAMES = ["a", "b", "c", "d"]
SPACE = SearchSpace(
    max_depth=(2, 3), learning_rate=(0.3,), scale_pos_weight=(1.0, "sqrt"), max_rounds=40
)


def _data(seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    margin = 1.5 * X[:, 0] - X[:, 1] + 0.5 * X[:, 2] * X[:, 3] - 3.0
    y = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(np.int8)
    is_valid = np.arange(n) >= int(n * 0.75)  # the window's last quarter
    keep = np.ones(n, dtype=bool)
    return X, y, is_valid, keep


def test_search_is_deterministic_with_a_seed():
    X, y, is_valid, keep = _data()
    a = search_and_fit(X, y, is_valid, keep, NAMES, seed=5, space=SPACE)
    b = search_and_fit(X, y, is_valid, keep, NAMES, seed=5, space=SPACE)
    assert bytes(a.booster.save_raw("ubj")) == bytes(b.booster.save_raw("ubj"))
    assert a.trials == b.trials and a.params == b.params
    c = search_and_fit(X, y, is_valid, keep, NAMES, seed=6, space=SPACE)
    assert bytes(c.booster.save_raw("ubj")) != bytes(a.booster.save_raw("ubj"))
    assert len(a.trials) == 4 and sum(t["chosen"] for t in a.trials) == 1
    assert a.booster.num_boosted_rounds() == a.rounds == a.chosen["rounds"]
    assert a.params["max_depth"] == a.chosen["max_depth"]


def test_early_stopping_sees_only_the_validation_window(monkeypatch):
    """Each grid point learns from the rows before the validation window and stops on the
    measured validation rows only (known cards removed); the refit learns from every row for
    the chosen rounds."""
    X, y, is_valid, keep = _data(1)
    keep[np.flatnonzero(is_valid)[::3]] = False  # "known cards": not measured
    calls = []
    real_train = xgb.train

    def spy(params, dtrain, num_boost_round=10, evals=(), **kw):
        calls.append((dtrain.num_row(), [d.num_row() for d, _ in evals], num_boost_round))
        return real_train(params, dtrain, num_boost_round=num_boost_round, evals=evals, **kw)

    monkeypatch.setattr(search_mod.xgb, "train", spy)
    r = search_and_fit(X, y, is_valid, keep, NAMES, seed=0, space=SPACE)
    *grid, refit = calls
    assert len(grid) == 4
    for rows, evals, rounds in grid:
        assert rows == int((~is_valid).sum())
        assert evals == [int((is_valid & keep).sum())]
        assert rounds == SPACE.max_rounds
    assert refit == (len(y), [], r.rounds)


def test_rounds_follow_the_validation_labels_not_the_training_ones():
    """The rounds kept are where the validation window's aucpr peaked: recomputed here from a
    full-length model, they agree; and flipping labels outside the validation window changes
    the models but the choice is still read from the validation window."""
    X, y, is_valid, keep = _data(2)
    space = SearchSpace(max_depth=(2,), learning_rate=(0.3,), scale_pos_weight=(1.0,))
    r = search_and_fit(X, y, is_valid, keep, NAMES, seed=0, space=space)
    params = {**search_mod.BASE_PARAMS, "max_depth": 2, "learning_rate": 0.3, "seed": 0}
    dfit = xgb.DMatrix(X[~is_valid], label=y[~is_valid], feature_names=NAMES)
    dvalid = xgb.DMatrix(X[is_valid], label=y[is_valid], feature_names=NAMES)
    history: dict = {}
    xgb.train(
        params,
        dfit,
        num_boost_round=space.max_rounds,
        evals=[(dvalid, "v")],
        evals_result=history,
        verbose_eval=False,
    )
    curve = history["v"]["aucpr"]
    best = int(np.argmax(curve))  # first maximum, as early stopping keeps it
    # early stopping stops once 30 rounds bring no improvement: its best is the first maximum
    # of the curve up to that point
    assert r.rounds - 1 == int(np.argmax(curve[: best + space.early_stopping_rounds + 1]))


def test_cheapest_within_tolerance_is_chosen():
    X, y, is_valid, keep = _data(3)
    strict = search_and_fit(
        X, y, is_valid, keep, NAMES, space=SearchSpace(**{**SPACE.__dict__, "cost_tolerance": 0})
    )
    best = max(t["valid_average_precision"] for t in strict.trials)
    assert strict.chosen["valid_average_precision"] == best
    loose = search_and_fit(
        X, y, is_valid, keep, NAMES, space=SearchSpace(**{**SPACE.__dict__, "cost_tolerance": 1})
    )
    assert loose.chosen["cost"] == min(t["cost"] for t in loose.trials)


def test_search_needs_both_classes_in_both_parts():
    X, y, is_valid, keep = _data()
    y2 = y.copy()
    y2[is_valid] = 0
    with pytest.raises(DataError, match="validation window"):
        search_and_fit(X, y2, is_valid, keep, NAMES, space=SPACE)


def test_validation_days_and_weights():
    assert validation_days(28) == 7
    assert validation_days(7) == 2  # the handbook's week: its last two days
    assert validation_days(16) == 5
    assert validation_days(3, wanted=7) == 1
    with pytest.raises(DataError):
        validation_days(1)
    y = np.array([1] * 10 + [0] * 990)
    assert resolve_weight("sqrt", y) == pytest.approx(np.sqrt(99), abs=1e-4)
    assert resolve_weight(2, y) == 2.0
    with pytest.raises(DataError):
        resolve_weight("balanced", y)


def _days_of_cards(days: int = 10, cards: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(days), cards * 2)
    card = np.tile(np.repeat(np.arange(cards), 2), days).astype(str)
    y = (rng.random(len(day)) < 0.03).astype(np.int8)
    scores = np.clip(rng.random(len(day)) * 0.6 + 0.4 * y, 0, 1)
    return scores, y, day, card


def test_review_threshold_holds_the_capacity():
    scores, y, day, card = _days_of_cards()
    for capacity in (1.0, 25.0, 100.0, 399.0):
        policy = capacity_thresholds(scores, y, day, card, review_capacity=capacity)
        done = policy["validation"]["cards_reviewed_or_declined_per_day"]
        assert capacity - 1 <= done <= capacity  # continuous scores: no ties to drop
        assert 0.0 < policy["review_threshold"] <= policy["decline_threshold"] <= 1.0
    everyone = capacity_thresholds(scores, y, day, card, review_capacity=10_000)
    assert everyone["review_threshold"] == 0.0


def test_decline_threshold_holds_the_precision():
    scores, y, day, card = _days_of_cards(seed=1)
    scores = scores.copy()
    scores[y == 1] = np.linspace(0.95, 0.999, int(y.sum()))  # frauds on top
    policy = capacity_thresholds(scores, y, day, card, review_capacity=5, decline_precision=0.9)
    out = policy_outcome(policy, scores, y, day, card)
    assert out["decline_precision"] >= 0.9
    assert policy["decline_threshold"] >= policy["review_threshold"]
    # no score is precise enough: no declines
    noise = capacity_thresholds(np.full(len(y), 0.5), y, day, card, decline_precision=0.9)
    assert noise["decline_threshold"] == 1.0


def test_capacity_thresholds_reject_bad_settings():
    scores, y, day, card = _days_of_cards()
    with pytest.raises(DataError, match="capacity"):
        capacity_thresholds(scores, y, day, card, review_capacity=0)
    with pytest.raises(DataError, match="precision"):
        capacity_thresholds(scores, y, day, card, decline_precision=1.5)
