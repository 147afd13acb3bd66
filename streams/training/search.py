"""The stage-2 model search: a small, seeded XGBoost grid with early stopping on a later window.

``train`` and ``evaluate`` fit every stage-2 model through ``search_and_fit``:

1. The training window's last ``valid_days`` days are the **validation window**; the days
   before them are the **search training** part. Every label of both parts is known once the
   label delay has passed after the window's end, which is when the handbook's protocol (and
   ``train``) deploys a model: nothing later than the window is read. Cards with a fraud known
   on a validation day (from the window's start through that day − delay − 1) are removed from
   that day, as in the protocol's test weeks.
2. Each grid point (``max_depth`` x ``learning_rate`` x ``scale_pos_weight``) is trained on the
   search part with early stopping on the validation window's ``aucpr``
   (``EARLY_STOPPING_ROUNDS`` without improvement, at most ``MAX_ROUNDS``); it keeps its best
   round count and is scored on the validation window (average precision, scikit-learn's).
3. The chosen point is the cheapest (trees x 2^depth, the TreeSHAP cost of a decision's reasons)
   among those within ``COST_TOLERANCE`` of the best validation average precision.
4. The chosen parameters are refit on the whole window for the chosen number of rounds.

``scale_pos_weight`` is given per grid point either as a number or as ``"sqrt"``: the square
root of the search part's genuine/fraud ratio (a compromise between no weighting and the full
balance, which inflates the probabilities of every suspicious-looking payment).

Everything runs on one thread with a fixed seed: the same data, seed and grid give the same
model bytes. Cost on the handbook's data (28-day window, about 270,000 rows, 2 shared cores):
see ``docs/evaluation.md``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.metrics import average_precision_score

from streams.errors import DataError

BASE_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "aucpr",
    "tree_method": "hist",
    "min_child_weight": 1.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "nthread": 1,  # fixed: identical model bytes for a given seed, whatever the machine
}
MAX_ROUNDS = 300
EARLY_STOPPING_ROUNDS = 30
COST_TOLERANCE = 0.003  # average-precision points a cheaper model may give up
VALID_DAYS = 7


@dataclass(frozen=True)
class SearchSpace:
    """The grid; every combination is tried (cheapest models first)."""

    max_depth: tuple[int, ...] = (3, 5)
    learning_rate: tuple[float, ...] = (0.1, 0.3)
    scale_pos_weight: tuple[float | str, ...] = (1.0, "sqrt")
    max_rounds: int = MAX_ROUNDS
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS
    cost_tolerance: float = COST_TOLERANCE

    def points(self) -> list[dict[str, Any]]:
        grid = itertools.product(self.max_depth, self.learning_rate, self.scale_pos_weight)
        return [
            {"max_depth": d, "learning_rate": lr, "scale_pos_weight": w}
            for d, lr, w in sorted(grid, key=lambda p: (p[0], -p[1], str(p[2])))
        ]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class SearchResult:
    booster: xgb.Booster  # refit on the whole window with the chosen parameters and rounds
    params: dict[str, Any]  # the refit's full parameters
    rounds: int
    chosen: dict[str, Any]  # the chosen grid point's record in ``trials``
    trials: list[dict[str, Any]] = field(default_factory=list)
    valid_scores: np.ndarray = field(default_factory=lambda: np.empty(0))  # chosen point's
    seconds: float = 0.0


def resolve_weight(weight: float | str, y: np.ndarray) -> float:
    """A grid point's ``scale_pos_weight`` as a number for labels ``y``."""
    if isinstance(weight, str):
        if weight != "sqrt":
            raise DataError(f"scale_pos_weight must be a number or 'sqrt', not {weight!r}")
        pos = int(np.sum(y))
        neg = len(y) - pos
        return round(math.sqrt(neg / pos), 4) if pos else 1.0
    return float(weight)


def _cost(rounds: int, depth: int) -> int:
    return rounds * 2**depth


def search_and_fit(
    X: np.ndarray,
    y: np.ndarray,
    is_valid: np.ndarray,
    valid_keep: np.ndarray,
    feature_names: Sequence[str],
    *,
    seed: int = 0,
    space: SearchSpace | None = None,
    base_params: dict[str, Any] | None = None,
) -> SearchResult:
    """Search on the window's rows ``X``/``y`` and refit on all of them.

    ``is_valid`` marks the validation window's rows (the window's last days); the others are
    the search training part. ``valid_keep`` marks the validation rows that are measured (known
    compromised cards removed); early stopping and the choice see only those.
    """
    space = space or SearchSpace()
    names = list(feature_names)
    is_valid = np.asarray(is_valid, dtype=bool)
    fit_part = ~is_valid
    measured = is_valid & np.asarray(valid_keep, dtype=bool)
    _check_parts(y, fit_part, measured)
    started = time.perf_counter()
    base = {**BASE_PARAMS, **(base_params or {}), "seed": seed}
    dfit = xgb.DMatrix(X[fit_part], label=y[fit_part], feature_names=names)
    dvalid = xgb.DMatrix(X[measured], label=y[measured], feature_names=names)
    runs = [
        _trial(point, base, (dfit, y[fit_part]), (dvalid, y[measured]), space)
        for point in space.points()
    ]
    trials = [trial for trial, _ in runs]
    pick = _choose(trials, space.cost_tolerance)
    chosen = trials[pick]
    params = {
        **base,
        "max_depth": chosen["max_depth"],
        "learning_rate": chosen["learning_rate"],
        # the whole window's own balance when the weight is relative
        "scale_pos_weight": resolve_weight(chosen["scale_pos_weight"], y),
    }
    params.pop("eval_metric", None)
    full = xgb.DMatrix(X, label=y, feature_names=names)
    booster = xgb.train(params, full, num_boost_round=chosen["rounds"], verbose_eval=False)
    booster.feature_names = names
    return SearchResult(
        booster=booster,
        params=params,
        rounds=chosen["rounds"],
        chosen=chosen,
        trials=trials,
        valid_scores=runs[pick][1],
        seconds=round(time.perf_counter() - started, 1),
    )


def _check_parts(y: np.ndarray, fit_part: np.ndarray, measured: np.ndarray) -> None:
    for label, mask in (("search training part", fit_part), ("validation window", measured)):
        n_fraud = int(y[mask].sum())
        if n_fraud == 0 or n_fraud == int(mask.sum()):
            raise DataError(
                f"the {label} has {int(mask.sum())} rows and {n_fraud} frauds: it needs both "
                "classes (a longer training window, or fewer validation days)"
            )


def _trial(
    point: dict[str, Any],
    base: dict[str, Any],
    fit: tuple[xgb.DMatrix, np.ndarray],
    valid: tuple[xgb.DMatrix, np.ndarray],
    space: SearchSpace,
) -> tuple[dict[str, Any], np.ndarray]:
    """One grid point trained on ``fit`` with early stopping on ``valid`` (each a matrix and
    its labels): its record and its validation scores."""
    (dfit, y_fit), (dvalid, y_valid) = fit, valid
    weight = resolve_weight(point["scale_pos_weight"], y_fit)
    booster = xgb.train(
        {**base, **point, "scale_pos_weight": weight},
        dfit,
        num_boost_round=space.max_rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=space.early_stopping_rounds,
        verbose_eval=False,
    )
    rounds = booster.best_iteration + 1
    p = np.asarray(booster[:rounds].predict(dvalid), dtype=np.float64)
    record = {
        **point,
        "scale_pos_weight_value": weight,
        "rounds": rounds,
        "valid_average_precision": round(float(average_precision_score(y_valid, p)), 6),
        "cost": _cost(rounds, point["max_depth"]),
    }
    return record, p


def _choose(trials: list[dict[str, Any]], tolerance: float) -> int:
    """The cheapest trial within ``tolerance`` of the best validation AP (marks ``chosen``)."""
    best = max(t["valid_average_precision"] for t in trials)
    near = [i for i, t in enumerate(trials) if t["valid_average_precision"] >= best - tolerance]
    pick = min(near, key=lambda i: (trials[i]["cost"], -trials[i]["valid_average_precision"], i))
    for i, t in enumerate(trials):
        t["chosen"] = i == pick
    return pick


def validation_days(window_days: int, wanted: int = VALID_DAYS) -> int:
    """Validation days for a window of ``window_days``: ``wanted``, at most a third of the
    window (a 7-day window validates on its last 2 days), at least 1."""
    if window_days < 2:
        raise DataError(f"a training window of {window_days} day(s) leaves no validation window")
    return max(1, min(wanted, window_days // 3))
