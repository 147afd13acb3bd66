"""Train one fold's stage-2 model from features stage 1 already computed.

By default a fold's model comes from the same seeded search as ``train``
(``streams.training.search``): the fold's training window (the days ending with its training
week, ``--train-history-days``) is split into a search part and its last days (validation:
early stopping, the choice of parameters); the chosen parameters are refit on the whole window.
Every label read belongs to the training window, all known before the fold's test week; the test
week is never looked at. A fixed ``rounds`` instead trains ``FIXED_POINT`` for that many rounds
without a search (quick runs and tests).

``reference_model`` is the handbook's Chapter-5 reference XGBoost (50 trees, depth 3, its 15
features, trained on the fold's 7-day training week), scored on every test transaction: the
baseline every data set's result is compared with.

Models are written with the trainer's ``save_model_dir`` and loaded with ``RiskModel``, exactly
as stage 2 loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from streams.errors import DataError
from streams.features.names import DAY_MS, HANDBOOK_15, LABEL_DELAY_DAYS, MODEL_FEATURES
from streams.stage2.model import RiskModel
from streams.training.artifact import save_model_dir
from streams.training.search import (
    BASE_PARAMS,
    VALID_DAYS,
    SearchSpace,
    search_and_fit,
    validation_days,
)
from streams.training.validation import known_card_mask

FIXED_POINT: dict[str, Any] = {"max_depth": 5, "learning_rate": 0.1, "scale_pos_weight": 1.0}
# The handbook's Chapter-5 XGBoost as DATA.md reproduces it (exact trees, base score 0.5).
REFERENCE_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "exact",
    "base_score": 0.5,
    "max_depth": 3,
    "learning_rate": 0.3,
    "nthread": 1,
}
REFERENCE_ROUNDS = 50


def fit_params(seed: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fixed-rounds parameters, without evaluation metrics (no evaluation set here)."""
    full = {**BASE_PARAMS, **FIXED_POINT, **(params or {}), "seed": seed}
    full.pop("eval_metric", None)
    return full


def _check(y: np.ndarray) -> int:
    n_fraud = int(y.sum())
    if n_fraud == 0 or n_fraud == len(y):
        raise DataError(
            f"the training window has {len(y)} rows and {n_fraud} frauds: it needs both classes"
        )
    return n_fraud


def fit_model(
    train: pl.DataFrame,
    out_dir: Path,
    *,
    rounds: int | None = None,
    seed: int = 0,
    features: list[str] | None = None,
    space: SearchSpace | None = None,
    valid_days: int = VALID_DAYS,
    label_delay_days: int = LABEL_DELAY_DAYS,
    params: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> RiskModel:
    """Train on ``train`` (``features``, ``TX_FRAUD``, ``ts_ms``, ``CUSTOMER_ID``), write
    ``out_dir``, load it back. ``rounds=None``: the search; a number: fixed rounds."""
    names = list(features or MODEL_FEATURES)
    y = train["TX_FRAUD"].cast(pl.Int8).to_numpy()
    n_fraud = _check(y)
    X = train.select(names).to_numpy().astype(np.float32)
    meta: dict[str, Any] = {
        "name": "fraudstream-eval",
        "feature_names": names,
        "seed": seed,
        "class_balance": {"train": {"rows": len(y), "frauds": n_fraud}},
    }
    if rounds is None:
        ts = train["ts_ms"].to_numpy()
        day = ts // DAY_MS
        first, last = int(day.min()), int(day.max())
        vdays = validation_days(last - first + 1, valid_days)
        is_valid = day > last - vdays
        cards = train["CUSTOMER_ID"].cast(pl.Utf8).to_numpy()
        known = known_card_mask(ts, cards, y, is_valid, first * DAY_MS, label_delay_days)
        result = search_and_fit(X, y, is_valid, ~known, names, seed=seed, space=space)
        booster = result.booster
        meta["params"] = result.params
        meta["training"] = {"num_trees": result.rounds, "validation_days": vdays}
        meta["search"] = {
            "trials": result.trials,
            "chosen": result.chosen,
            "seconds": result.seconds,
        }
    else:
        if rounds < 1:
            raise DataError(f"rounds must be at least 1, not {rounds}")
        full = fit_params(seed, params)
        dtrain = xgb.DMatrix(X, label=y, feature_names=names)
        booster = xgb.train(full, dtrain, num_boost_round=rounds, verbose_eval=False)
        booster.feature_names = names
        meta["params"] = full
        meta["training"] = {"num_trees": rounds, "early_stopping": None}
    meta.update(metadata or {})
    save_model_dir(booster, meta, out_dir, name="fraudstream-eval")
    return RiskModel.load(out_dir)


def reference_model(train_week: pl.DataFrame, seed: int = 0) -> xgb.Booster:
    """The handbook's Chapter-5 reference XGBoost on ``train_week`` (its 15 features)."""
    y = train_week["TX_FRAUD"].cast(pl.Int8).to_numpy()
    _check(y)
    X = train_week.select(HANDBOOK_15).to_numpy().astype(np.float32)
    dtrain = xgb.DMatrix(X, label=y, feature_names=HANDBOOK_15)
    params = {**REFERENCE_PARAMS, "seed": seed}
    return xgb.train(params, dtrain, num_boost_round=REFERENCE_ROUNDS, verbose_eval=False)
