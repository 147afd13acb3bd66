"""Train the stage-2 XGBoost model on stream features of a handbook-format history.

Features come from the stream code over the whole history in stream order (the training window
needs the history before it): ``stage1_verdicts`` runs stage 1 itself and also says which rows
it forwarded, so that stage 2 learns from the rows it will score (``train``'s default);
``streams.features.offline.compute_features`` gives the features alone.
The model comes from the seeded search of ``streams.training.search`` on ``[train_start,
train_end)``: its last ``valid_days`` days validate (early stopping, the choice of parameters,
the policy thresholds), then the chosen parameters are refit on the whole window. All labels
used are those of the window, known once the label delay has passed after ``train_end``: the
model is meant for traffic from then on. When the data covers the week after that delay, the
refit model is also measured there (``holdout``), a period nothing was chosen on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
from streams.settings import Settings
from streams.stage2.model import sigmoid
from streams.training.artifact import save_model_dir
from streams.training.model_card import write_card
from streams.training.policy import (
    DECLINE_PRECISION,
    REVIEW_CAPACITY,
    capacity_thresholds,
    policy_outcome,
)
from streams.training.search import (
    VALID_DAYS,
    SearchResult,
    SearchSpace,
    search_and_fit,
    validation_days,
)
from streams.training.validation import known_card_mask, validation_metrics

HOLDOUT_DAYS = 7
log = logging.getLogger(__name__)


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


def stage1_verdicts(
    df: pl.DataFrame,
    settings: Settings,
    rules_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Stage 1 over the history in stream order, as ``evaluate`` runs it (its online classifier
    from nothing at the history's start, labels through the delay gate): the feature frame and
    which rows it forwarded, one per row of ``df``."""
    from streams.stage1.history import screen_history

    cold = settings.model_copy(update={"stage1_warm_start": False})
    screened = screen_history(df, cold, rules_dir=rules_dir, progress=progress)
    if screened.height != df.height:
        raise DataError(f"stage 1 screened {screened.height} of {df.height} rows")
    return screened.select(MODEL_FEATURES), screened["FLAGGED"].to_numpy().astype(bool)


def train_model(
    df: pl.DataFrame,
    train_start: date,
    train_end: date,
    out_dir: Path,
    *,
    seed: int = 0,
    label_delay_days: int = LABEL_DELAY_DAYS,
    valid_days: int = VALID_DAYS,
    space: SearchSpace | None = None,
    review_capacity: float = REVIEW_CAPACITY,
    decline_precision: float = DECLINE_PRECISION,
    progress: Callable[[int], None] | None = None,
    features: pl.DataFrame | None = None,
    forwarded: np.ndarray | None = None,
    name: str = "fraudstream",
    source: str | None = None,
) -> dict[str, Any]:
    """Search, refit, write the model directory; return its metadata.

    ``df`` is a ``read_handbook`` frame (``ts_ms``, ``CUSTOMER_ID``, ``TERMINAL_ID``,
    ``TX_AMOUNT``, ``TX_FRAUD``) in stream order. ``progress(n)`` is told of each ``n`` rows
    featurised (``df.height`` in all). ``features`` may pass the frame ``compute_features(df)``
    already returned (e.g. when training several folds). ``valid_days`` is capped at a third of
    the window (``search.validation_days``). ``review_capacity`` (cards a day an analyst team
    reviews) and ``decline_precision`` set the policy thresholds (``training.policy``).

    ``forwarded`` (one flag per row of ``df``: stage 1's verdicts over the history,
    ``stage1_verdicts``) restricts the model, its validation, policy thresholds and holdout to
    the rows stage 1 forwarded: the only ones stage 2 scores. Stage 1's warm start still
    learns every row of the window (stage 1 screens them all).
    """
    _check_inputs(df, train_start, train_end, forwarded)
    h = _history(df, features, progress)
    w = _Window.of(train_start, train_end, valid_days, h.ts)
    fit = _search_served(h, w.rows, w.t0, w.v0, forwarded, label_delay_days, seed, space)
    valid = fit.in_valid & ~fit.known
    booster = fit.result.booster
    p_valid = fit.result.valid_scores  # the search model's, on rows it did not learn from
    y_valid, day_valid, cards_valid = h.y[valid], h.day[valid], h.cards[valid]
    policy = capacity_thresholds(
        p_valid,
        y_valid,
        day_valid,
        cards_valid,
        review_capacity=review_capacity,
        decline_precision=decline_precision,
    )
    holdout = _holdout(
        booster, policy, h.X, h.y, h.ts, h.cards, fit.served, w.t0,
        w.t1 + label_delay_days * DAY_MS, label_delay_days,
    )  # fmt: skip
    warm, warm_learned = _warm_start(df, h, w.rows)
    metadata: dict[str, Any] = {
        "name": name,
        "feature_names": list(MODEL_FEATURES),
        **w.describe(),
        "label_delay_days": label_delay_days,
        "metrics": validation_metrics(y_valid, p_valid, day_valid, cards_valid),
        "holdout": holdout,
        "policy": policy,
        "training_rows": fit.training_rows,
        "class_balance": _class_balance(h.y, w.rows, fit),
        **_search_sections(space or SearchSpace(), fit.result, w.vdays),
        "seed": seed,
        "feature_importance_gain": _gain(booster),
        "stage1_warm_start": {
            "file": WARM_START_FILE,
            "window": "the training window",
            "labels_learned": warm_learned,
        },
        "data": _data_section(df, h, source),
    }

    def card(out: Path, meta: dict[str, Any]) -> None:
        warm.save(out / WARM_START_FILE)
        write_card(out, meta, y_valid, p_valid)

    return save_model_dir(booster, metadata, Path(out_dir), name=name, extras=card)


def _check_inputs(
    df: pl.DataFrame, train_start: date, train_end: date, forwarded: np.ndarray | None
) -> None:
    if "TX_FRAUD" not in df.columns:
        raise DataError("training needs labels: the data has no TX_FRAUD column")
    if train_end <= train_start:
        raise DataError(f"empty training window: {train_start} to {train_end}")
    if forwarded is not None and len(forwarded) != df.height:
        raise DataError(f"{len(forwarded)} stage-1 verdicts for {df.height} rows")


@dataclass(frozen=True)
class _Window:
    """The training window ``[start, end)`` in event-time ms, its validation days at the end,
    and which history rows it holds."""

    start: date
    end: date
    t0: int
    t1: int
    v0: int  # first ms of the validation days
    vdays: int
    rows: np.ndarray

    @classmethod
    def of(cls, start: date, end: date, valid_days: int, ts: np.ndarray) -> _Window:
        t0, t1 = _ms(start), _ms(end)
        vdays = validation_days((end - start).days, valid_days)
        rows = (ts >= t0) & (ts < t1)
        if not rows.any():
            raise DataError(f"no transactions from {start} to {end}")
        return cls(start, end, t0, t1, t1 - vdays * DAY_MS, vdays, rows)

    def describe(self) -> dict[str, Any]:
        """The metadata's ``training_window`` and ``validation_window``."""
        return {
            "training_window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "validation_window": {
                "start": _day(self.v0),
                "end": _day(self.t1),
                "rule": f"the training window's last {self.vdays} days (the search trains on "
                "the days before them, then the chosen parameters are refit on the whole "
                "window); cards with a known fraud removed each day",
            },
        }


def _warm_start(df: pl.DataFrame, h: _History, rows: np.ndarray) -> tuple[OnlineClassifier, int]:
    """Stage 1's online classifier learnt on the window's ``rows`` (it keeps learning live), and
    how many labels it learnt."""
    warm = OnlineClassifier(cache_size=50_000)
    ids = df["TRANSACTION_ID"].cast(pl.Utf8).to_numpy()[rows].tolist()
    return warm, warm.learn_rows(ids, h.X[rows], h.y[rows])


def _gain(booster: xgb.Booster) -> dict[str, float]:
    scores = booster.get_score(importance_type="total_gain")
    return {k: round(float(np.sum(v)), 4) for k, v in scores.items()}


def _data_section(df: pl.DataFrame, h: _History, source: str | None) -> dict[str, Any]:
    return {
        "source": source,
        "history_rows": df.height,
        "history_start": _day(int(h.ts[0])) if len(h.ts) else None,
        "history_end": _day(int(h.ts[-1])) if len(h.ts) else None,
    }


@dataclass(frozen=True)
class _History:
    """The history's columns as arrays, one entry per row in stream order."""

    ts: np.ndarray
    y: np.ndarray
    cards: np.ndarray
    X: np.ndarray  # MODEL_FEATURES, float32
    day: np.ndarray


def _history(
    df: pl.DataFrame, features: pl.DataFrame | None, progress: Callable[[int], None] | None
) -> _History:
    if features is None:
        features = compute_features(df, progress=progress)
    elif features.height != df.height or features.columns != MODEL_FEATURES:
        raise DataError("precomputed features do not match the data frame or MODEL_FEATURES")
    ts = df["ts_ms"].to_numpy()
    return _History(
        ts=ts,
        y=df["TX_FRAUD"].cast(pl.Int8).to_numpy(),
        cards=df["CUSTOMER_ID"].cast(pl.Utf8).to_numpy(),
        X=features.to_numpy().astype(np.float32),
        day=ts // DAY_MS,
    )


@dataclass(frozen=True)
class _Fit:
    """The search's result and the rows it used."""

    result: SearchResult
    served: np.ndarray  # the rows stage 2 scores (all, or those stage 1 forwarded)
    train: np.ndarray  # served rows of the window: learned from, validated and held out on
    in_valid: np.ndarray  # train rows of the validation days
    known: np.ndarray  # rows of cards with a fraud known by then (left out of validation)
    training_rows: str


def _search_served(
    h: _History,
    window: np.ndarray,
    t0: int,
    v0: int,
    forwarded: np.ndarray | None,
    label_delay_days: int,
    seed: int,
    space: SearchSpace | None,
) -> _Fit:
    """The search on the window's rows stage 2 serves: those stage 1 forwarded when
    ``forwarded`` is given (every row if they lack a class), else every row."""

    def search(served: np.ndarray, training_rows: str) -> _Fit:
        train = window & served
        in_valid = train & (h.ts >= v0)
        known = known_card_mask(h.ts, h.cards, h.y, in_valid, t0, label_delay_days)
        result = search_and_fit(
            h.X[train], h.y[train], in_valid[train], ~known[train], MODEL_FEATURES,
            seed=seed, space=space,
        )  # fmt: skip
        return _Fit(result, served, train, in_valid, known, training_rows)

    every = np.ones(len(h.ts), dtype=bool)
    if forwarded is None:
        return search(every, "all")
    try:
        return search(forwarded.astype(bool), "forwarded by stage 1")
    except DataError as exc:
        log.warning("stage 2 learns from every row: the rows stage 1 forwarded: %s", exc)
        return search(every, "all (the rows stage 1 forwarded lack a class)")


def _class_balance(y: np.ndarray, window: np.ndarray, fit: _Fit) -> dict[str, Any]:
    valid = fit.in_valid & ~fit.known
    return {
        "window": {"rows": int(window.sum()), "frauds": int(y[window].sum())},
        "train": {"rows": int(fit.train.sum()), "frauds": int(y[fit.train].sum())},
        "validation": {"rows": int(valid.sum()), "frauds": int(y[valid].sum())},
        "validation_known_cards_removed_rows": int((fit.in_valid & fit.known).sum()),
    }


def _search_sections(space: SearchSpace, result: SearchResult, vdays: int) -> dict[str, Any]:
    """The metadata's ``training``, ``search`` and ``params``: what the search tried and chose."""
    return {
        "training": {
            "max_rounds": space.max_rounds,
            "early_stopping_rounds": space.early_stopping_rounds,
            "early_stopping_metric": "aucpr",
            "best_iteration": result.rounds - 1,
            "num_trees": result.rounds,
        },
        "search": {
            "space": space.as_dict(),
            "validation_days": vdays,
            "selection": "cheapest (trees x 2^depth) within cost_tolerance of the best "
            "validation average precision; refit on the whole window with its rounds",
            "trials": result.trials,
            "chosen": result.chosen,
            "seconds": result.seconds,
        },
        "params": result.params,
    }


def _holdout(
    booster: xgb.Booster,
    policy: dict[str, Any],
    X_all: np.ndarray,
    y_all: np.ndarray,
    ts: np.ndarray,
    cards: np.ndarray,
    served: np.ndarray,
    t0: int,
    h0: int,
    label_delay_days: int,
) -> dict[str, Any] | None:
    """The refit model on the ``HOLDOUT_DAYS`` from ``h0`` (the window's end + the label delay),
    on the rows stage 2 serves, known cards removed; None when the data does not cover them."""
    h1 = h0 + HOLDOUT_DAYS * DAY_MS
    if not len(ts) or int(ts[-1]) < h1 - DAY_MS:
        return None
    in_hold = (ts >= h0) & (ts < h1) & served
    hold = in_hold & ~known_card_mask(ts, cards, y_all, in_hold, t0, label_delay_days)
    if not hold.any():
        return None
    margin = booster.predict(_dmatrix(X_all[hold]), output_margin=True)
    p_hold = sigmoid(np.asarray(margin, dtype=np.float64))
    day = ts[hold] // DAY_MS
    return {
        "start": _day(h0),
        "end": _day(h1),
        "rule": f"train_end + {label_delay_days} days, for {HOLDOUT_DAYS} days; "
        "the refit model, nothing chosen on it; cards with a known fraud removed",
        "metrics": validation_metrics(y_all[hold], p_hold, day, cards[hold]),
        "policy": policy_outcome(policy, p_hold, y_all[hold], day, cards[hold]),
    }


def _dmatrix(X: np.ndarray) -> xgb.DMatrix:
    return xgb.DMatrix(X, feature_names=MODEL_FEATURES)
