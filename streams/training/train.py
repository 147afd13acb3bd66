"""Train the stage-2 XGBoost model on stream features of a handbook-format history.

Features come from ``streams.features.offline.compute_features`` over the whole history in stream
order (the same code the stream workers run; the training window needs the history before it).
The model learns from ``[train_start, train_end)`` and is validated, with early stopping, on
``[train_end + label_delay_days, + valid_days)``: the first period whose labels are all known
when a model trained on the window could be deployed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from streams.errors import DataError
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS, MODEL_FEATURES
from streams.features.offline import compute_features
from streams.online.supervised import WARM_START_FILE, OnlineClassifier
from streams.stage2.model import sigmoid
from streams.training.artifact import save_model_dir
from streams.training.model_card import write_card
from streams.training.validation import known_card_mask, validation_metrics

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": ["logloss", "aucpr"],  # the last one drives early stopping
    "tree_method": "hist",
    "max_depth": 5,
    "learning_rate": 0.1,
    "min_child_weight": 1.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "nthread": 1,  # fixed: identical model bytes for a given seed, whatever the machine
}
MAX_ROUNDS = 400
EARLY_STOPPING_ROUNDS = 30


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


def train_model(
    df: pl.DataFrame,
    train_start: date,
    train_end: date,
    out_dir: Path,
    *,
    seed: int = 0,
    label_delay_days: int = LABEL_DELAY_DAYS,
    valid_days: int = 7,
    params: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    features: pl.DataFrame | None = None,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
    name: str = "fraudstream",
    source: str | None = None,
) -> dict[str, Any]:
    """Train, validate, write the model directory; return its metadata.

    ``df`` is a ``read_handbook`` frame (``ts_ms``, ``CUSTOMER_ID``, ``TERMINAL_ID``,
    ``TX_AMOUNT``, ``TX_FRAUD``) in stream order. ``progress(n)`` is told of each ``n`` rows
    featurised (``df.height`` in all). ``features`` may pass the frame ``compute_features(df)``
    already returned (e.g. when training several folds). ``params`` update ``DEFAULT_PARAMS``.
    """
    if "TX_FRAUD" not in df.columns:
        raise DataError("training needs labels: the data has no TX_FRAUD column")
    if train_end <= train_start:
        raise DataError(f"empty training window: {train_start} to {train_end}")
    if features is None:
        features = compute_features(df, progress=progress)
    elif features.height != df.height or features.columns != MODEL_FEATURES:
        raise DataError("precomputed features do not match the data frame or MODEL_FEATURES")
    ts = df["ts_ms"].to_numpy()
    y_all = df["TX_FRAUD"].cast(pl.Int8).to_numpy()
    cards = df["CUSTOMER_ID"].cast(pl.Utf8).to_numpy()
    X_all = features.to_numpy().astype(np.float32)

    t0, t1 = _ms(train_start), _ms(train_end)
    v0 = t1 + label_delay_days * DAY_MS
    v1 = v0 + valid_days * DAY_MS
    train = (ts >= t0) & (ts < t1)
    in_valid = (ts >= v0) & (ts < v1)
    known = known_card_mask(ts, cards, y_all, in_valid, t0, label_delay_days)
    valid = in_valid & ~known
    for label, mask in (("training", train), ("validation", valid)):
        n_fraud = int(y_all[mask].sum())
        if n_fraud == 0 or n_fraud == int(mask.sum()):
            raise DataError(
                f"the {label} window has {int(mask.sum())} rows and {n_fraud} frauds: "
                "it needs both classes (check the dates against the data's time range)"
            )

    full_params = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    dtrain = xgb.DMatrix(X_all[train], label=y_all[train], feature_names=MODEL_FEATURES)
    dvalid = xgb.DMatrix(X_all[valid], label=y_all[valid], feature_names=MODEL_FEATURES)
    booster = xgb.train(
        full_params,
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    best = booster.best_iteration
    booster = booster[: best + 1]  # keep only the trees early stopping chose
    booster.feature_names = MODEL_FEATURES
    margin = booster.predict(dvalid, output_margin=True)
    p_valid = sigmoid(np.asarray(margin, dtype=np.float64))
    metrics = validation_metrics(y_all[valid], p_valid, ts[valid] // DAY_MS, cards[valid])
    scores = booster.get_score(importance_type="total_gain")
    gain = {k: round(float(np.sum(v)), 4) for k, v in scores.items()}

    # stage 1's online classifier, warm-started on the same window (it keeps learning live)
    warm = OnlineClassifier(cache_size=50_000)
    warm_learned = warm.learn_rows(
        df["TRANSACTION_ID"].cast(pl.Utf8).to_numpy()[train].tolist(), X_all[train], y_all[train]
    )

    metric = full_params["eval_metric"]
    metadata: dict[str, Any] = {
        "name": name,
        "feature_names": list(MODEL_FEATURES),
        "training_window": {"start": train_start.isoformat(), "end": train_end.isoformat()},
        "validation_window": {
            "start": _day(v0),
            "end": _day(v1),
            "rule": f"train_end + {label_delay_days} days, for {valid_days} days; "
            "cards with a known fraud removed each day",
        },
        "label_delay_days": label_delay_days,
        "metrics": metrics,
        "class_balance": {
            "train": {"rows": int(train.sum()), "frauds": int(y_all[train].sum())},
            "validation": {"rows": int(valid.sum()), "frauds": int(y_all[valid].sum())},
            "validation_known_cards_removed_rows": int((in_valid & known).sum()),
        },
        "training": {
            "max_rounds": max_rounds,
            "early_stopping_rounds": early_stopping_rounds,
            "early_stopping_metric": metric[-1] if isinstance(metric, list) else metric,
            "best_iteration": best,
            "num_trees": best + 1,
        },
        "params": full_params,
        "seed": seed,
        "feature_importance_gain": gain,
        "stage1_warm_start": {
            "file": WARM_START_FILE,
            "window": "the training window",
            "labels_learned": warm_learned,
        },
        "data": {
            "source": source,
            "history_rows": df.height,
            "history_start": _day(int(ts[0])) if len(ts) else None,
            "history_end": _day(int(ts[-1])) if len(ts) else None,
        },
    }

    def card(out: Path, meta: dict[str, Any]) -> None:
        warm.save(out / WARM_START_FILE)
        write_card(out, meta, y_all[valid], p_valid)

    return save_model_dir(booster, metadata, Path(out_dir), name=name, extras=card)
