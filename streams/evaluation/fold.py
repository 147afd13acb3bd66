"""One fold of ``evaluate``: train its stage-2 models on the training window, score the test week
through the cascade, the single stage and the handbook's reference, and measure them with the
known compromised cards removed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from streams.errors import DataError
from streams.evaluation.ceiling import delay_ceiling
from streams.evaluation.fit import HANDBOOK_15, fit_model, reference_model
from streams.evaluation.handbook_metrics import day_number, remove_known_cards, two_stage_scores
from streams.evaluation.measure import blocked, measure, with_scenario
from streams.evaluation.protocol import Fold
from streams.evaluation.stage1_stats import forward_rate_recall
from streams.features.names import FEATURE_SETS
from streams.stage2.model import RiskModel

log = logging.getLogger(__name__)

STAGE1_COLUMNS = ("TRANSACTION_ID", "CUSTOMER_ID", "TX_FRAUD", "STAGE1_SCORE", "FLAGGED")
KEEP_COLUMNS = (*STAGE1_COLUMNS, "RULES_FIRED", "TERMINAL_NB_FRAUD_30DAY_WINDOW")
PREDICT_CHUNK = 50_000


@dataclass
class Options:
    """What one evaluation run does besides the protocol."""

    train_history_days: int | None = None  # None: the fold's 7-day training week (handbook)
    rounds: int | None = None  # None: the seeded search of ``train`` per fold; a number: fixed
    seed: int = 0
    features: str = "all"  # a key of FEATURE_SETS (the ablation's feature families)

    @property
    def history_days(self) -> int:
        """Days of labelled history each fold trains on."""
        return self.train_history_days or 7

    def describe(self) -> dict[str, Any]:
        """The options as ``metrics.json`` records them."""
        return {
            "train_history_days": self.history_days,
            "rounds": self.rounds if self.rounds is not None else "searched per fold",
            "seed": self.seed,
            "features": self.features,
        }


def run_fold(
    fold: Fold,
    df: pl.DataFrame,
    screened: pl.DataFrame,
    out_dir: Path,
    opts: Options,
    first_day: date,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """The fold's metrics and its scored test week (every transaction, ``evaluated`` marking
    those left after the known-card removal)."""
    lo = max(fold.train_end - timedelta(days=opts.history_days - 1), first_day)
    train = days_of(screened, lo, fold.train_end)
    window = {"start": lo.isoformat(), "end": fold.train_end.isoformat(), "end_inclusive": True}

    def fit(rows: pl.DataFrame, name: str, trained_on: str) -> RiskModel:
        return fit_model(
            rows,
            out_dir / "models" / name,
            rounds=opts.rounds,
            seed=opts.seed,
            features=FEATURE_SETS[opts.features],
            metadata={"training_window": window, "fold": fold.as_dict(), "rows": trained_on},
        )

    # stage 2 scoring every transaction: a model of every row of the window
    every_row = fit(train, f"fold-{fold.index}-all-rows", "all")
    # the cascade's stage 2 sees only what stage 1 forwards, so it learns from those rows
    model, trained_on = cascade_model(fit, train, fold.index, out_dir / "models")
    test = days_of(screened, fold.test_start, fold.test_end)
    week = days_of(screened, fold.train_start, fold.train_end)
    scored = _score_week(fold, test, model, every_row, reference_model(week, opts.seed))
    history = days_of(screened, fold.train_start, fold.test_end).select(
        "CUSTOMER_ID", "day", "TX_FRAUD"
    )
    kept = remove_known_cards(scored, history, day_number(fold.train_start))
    scored = scored.join(
        kept.select("TRANSACTION_ID", pl.lit(True).alias("evaluated")),
        on="TRANSACTION_ID",
        how="left",
        maintain_order="left",
    ).with_columns(pl.col("evaluated").fill_null(False))
    kept = with_scenario(kept, df)
    result: dict[str, Any] = {
        **fold.as_dict(),
        **measure(kept, "score"),
        "single_stage": measure(kept, "single_stage_score", stage1=False),
        "stage2_trained_on": trained_on,
        "two_stage_with_all_rows_model": measure(kept, "all_rows_cascade_score", stage1=False),
        "handbook_reference": measure(kept, "reference_score", stage1=False),
        "delay_ceiling": delay_ceiling(kept),
        **_model_facts(model),
        "test_rows": test.height,
        "test_frauds": int(test["TX_FRAUD"].sum()),
        "evaluated_rows": kept.height,
        "evaluated_frauds": int(kept["TX_FRAUD"].sum()),
        "train_rows": train.height,
        "train_frauds": int(train["TX_FRAUD"].sum()),
        "stage2_train": model.metadata["class_balance"]["train"],
    }
    rate, recall = forward_rate_recall(_flags(test), test["TX_FRAUD"].to_numpy())
    result["before_known_card_removal"] = {"stage1_forward_rate": rate, "stage1_recall": recall}
    return result, scored


def _score_week(
    fold: Fold,
    test: pl.DataFrame,
    model: RiskModel,
    every_row: RiskModel,
    reference: xgb.Booster,
) -> pl.DataFrame:
    """The test week's kept columns with each scoring's column: the cascade (``score``), the
    every-row model alone and in the cascade, and the handbook's reference."""
    flagged = _flags(test)
    X15 = test.select(HANDBOOK_15).to_numpy().astype(np.float32)
    blocked_column = ["BLOCKED"] if "BLOCKED" in test.columns else []
    return test.select(*KEEP_COLUMNS, *blocked_column, "day").with_columns(
        pl.lit(fold.index).alias("fold"),
        pl.Series("score", two_stage(model, test, flagged)),
        pl.Series("single_stage_score", score_all(every_row, test)),
        pl.Series("reference_score", np.asarray(reference.inplace_predict(X15), np.float64)),
        # the same cascade with the every-row model as stage 2: what cascade training brings
        pl.Series("all_rows_cascade_score", two_stage(every_row, test, flagged)),
    )


def _flags(frame: pl.DataFrame) -> np.ndarray:
    """Stage 1's forward verdicts of the rows."""
    return frame["FLAGGED"].to_numpy().astype(bool)


def _model_facts(model: RiskModel) -> dict[str, Any]:
    """What the fold's search chose, from the model's metadata."""
    return {
        "rounds": model.metadata["training"]["num_trees"],
        "params": {
            k: model.metadata["params"].get(k)
            for k in ("max_depth", "learning_rate", "scale_pos_weight")
        },
        "search_seconds": model.metadata.get("search", {}).get("seconds"),
        "model_version": model.version,
    }


def cascade_model(
    fit: Callable[[pl.DataFrame, str, str], RiskModel],
    train: pl.DataFrame,
    fold: int,
    models: Path,
) -> tuple[RiskModel, str]:
    """The fold's stage-2 model: trained on the window's rows stage 1 forwarded (the rows it
    will score), or the every-row model when those lack a class in the search or validation
    part (``DataError``; the reason goes to the log and ``stage2_trained_on``), copied to where
    the forwarded one would be."""
    forwarded = train.filter(pl.col("FLAGGED").cast(pl.Boolean))
    try:
        return fit(forwarded, f"fold-{fold}", "forwarded"), "forwarded"
    except DataError as exc:
        log.warning("fold %d: stage 2 trained on every row: the forwarded ones %s", fold, exc)
        served = models / f"fold-{fold}"  # where the workers' run looks for it
        shutil.copytree(models / f"fold-{fold}-all-rows", served, dirs_exist_ok=True)
        return RiskModel.load(served), "all (the forwarded rows lack a class)"


def two_stage(model: RiskModel, test: pl.DataFrame, flagged: np.ndarray) -> np.ndarray:
    """Scores of the cascade: the stage-2 model's on the forwarded rows, stage 1's below them
    elsewhere, and 1 where a `block` rule declined at stage 1 (its most certain verdict)."""
    stage2 = np.full(test.height, np.nan)
    if flagged.any():  # the stage-2 path: RiskModel.predict on the forwarded rows only
        stage2[flagged] = predict(model, test.filter(pl.Series(flagged)))
    return np.where(
        blocked(test),
        1.0,
        two_stage_scores(test["STAGE1_SCORE"].to_numpy(), flagged, stage2),
    )


def predict(model: RiskModel, frame: pl.DataFrame) -> np.ndarray:
    X = frame.select(model.feature_names).to_numpy()
    parts = [model.predict(X[i : i + PREDICT_CHUNK])[0] for i in range(0, len(X), PREDICT_CHUNK)]
    return np.concatenate(parts) if parts else np.empty(0)


def score_all(model: RiskModel, frame: pl.DataFrame) -> np.ndarray:
    """Stage 2 on every row: the booster's probability (what ``predict`` returns, without
    computing the per-feature contributions nobody reads here)."""
    if frame.height == 0:
        return np.empty(0)
    X = frame.select(model.feature_names).to_numpy().astype(np.float32)
    return np.asarray(model.booster.inplace_predict(X), dtype=np.float64)


def days_of(frame: pl.DataFrame, first: date, last: date) -> pl.DataFrame:
    return frame.filter(pl.col("day").is_between(day_number(first), day_number(last)))
