"""Train one fold's stage-2 model from features stage 1 already computed.

``streams.training.train.train_model`` early-stops on the week that starts a label delay after
its training window, which in the handbook's folds *is* the test week; an evaluation must not
look at it. So a fold's model is trained here with the trainer's parameters (``DEFAULT_PARAMS``)
and a number of rounds chosen without the test week:

- a fixed ``rounds``, or
- ``rounds=None``: the handbook's chapter-5 validation. For a training week starting on W,
  ``train_model`` trains on ``[W − 14, W − 7)``, so that its early-stopping week is
  ``[W, W + 7)``: the fold's own training week, whose labels are all known before the test week.
  Its best round count is then used on the fold's training window.

Models are written with the trainer's ``save_model_dir`` and loaded with ``RiskModel``, exactly
as stage 2 loads them.
"""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from streams.errors import DataError
from streams.features.names import MODEL_FEATURES
from streams.stage2.model import RiskModel
from streams.training.artifact import save_model_dir
from streams.training.train import DEFAULT_PARAMS, train_model

# Chosen once on validation folds of the handbook's data, never on a test week: training weeks
# starting 2018-06-20, 06-27, 07-04, 07-11, each measured on the week after its delay week (all
# before the first test week). Mean AP / CP@100 of the two-stage score by rounds: 25: .668/.289,
# 50: .677/.291, 100: .679/.290, 200: .680/.289, 400: .683/.288: flat after about 100.
DEFAULT_ROUNDS = 100


def fit_params(seed: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trainer's parameters without evaluation metrics (no evaluation set here)."""
    full = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    full.pop("eval_metric", None)
    return full


def fit_model(
    train: pl.DataFrame,
    out_dir: Path,
    *,
    rounds: int,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> RiskModel:
    """Train on ``train`` (MODEL_FEATURES and TX_FRAUD), write ``out_dir``, load it back."""
    y = train["TX_FRAUD"].cast(pl.Int8).to_numpy()
    n_fraud = int(y.sum())
    if n_fraud == 0 or n_fraud == len(y):
        raise DataError(
            f"the training window has {len(y)} rows and {n_fraud} frauds: it needs both classes"
        )
    if rounds < 1:
        raise DataError(f"rounds must be at least 1, not {rounds}")
    X = train.select(MODEL_FEATURES).to_numpy().astype(np.float32)
    full = fit_params(seed, params)
    dtrain = xgb.DMatrix(X, label=y, feature_names=MODEL_FEATURES)
    booster = xgb.train(full, dtrain, num_boost_round=rounds, verbose_eval=False)
    booster.feature_names = MODEL_FEATURES
    meta: dict[str, Any] = {
        "name": "fraudstream-eval",
        "feature_names": list(MODEL_FEATURES),
        "params": full,
        "seed": seed,
        "training": {"num_trees": rounds, "early_stopping": None},
        "class_balance": {"train": {"rows": len(y), "frauds": n_fraud}},
        **(metadata or {}),
    }
    save_model_dir(booster, meta, out_dir, name="fraudstream-eval")
    return RiskModel.load(out_dir)


def validated_rounds(
    df: pl.DataFrame,
    features: pl.DataFrame,
    train_start: date,
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    out_dir: Path | None = None,
) -> int:
    """Best round count of ``train_model`` on ``[W − 14, W − 7)``, early-stopped on ``[W, W + 7)``.

    ``df`` is the ``read_handbook`` frame and ``features`` its MODEL_FEATURES frame (same rows).
    """
    with tempfile.TemporaryDirectory() as tmp:
        meta = train_model(
            df,
            train_start - timedelta(days=14),
            train_start - timedelta(days=7),
            out_dir or Path(tmp),
            seed=seed,
            params=params,
            features=features,
            name="fraudstream-eval-validation",
        )
    return int(meta["training"]["num_trees"])
