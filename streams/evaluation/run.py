"""``fraudstream evaluate``: the handbook's protocol through the two-stage pipeline, offline.

1. Read the data and lay out the folds (``protocol.folds``).
2. Run stage 1 once over the history in stream order, up to the end of the last test week
   (``streams.stage1.history.screen_history``: features, rules, online models, flags).
3. Per fold, train the stage-2 model on the labelled window's transactions that stage 1
   forwarded (``fit``: the rows stage 2 will score) and score the test week: forwarded
   transactions get the stage-2 score, the others keep their stage-1 score below them
   (``metrics.two_stage_scores``). A model of every row of the window, scoring every test
   transaction, gives the single-stage figure; in the cascade it gives
   ``two_stage_with_all_rows_model`` (what training on the forwarded rows brings).
4. Remove the known compromised cards, measure, and write ``metrics.json``, ``predictions.csv``
   (every test transaction, before the removal) and ``report.md`` with its plots. Stage 1's
   forwarding over the whole screened history goes to ``metrics.json``'s ``stream``.
5. With ``through_kafka``, run the same history through the broker and both worker processes and
   check that they publish the same scores (``streams.evaluation.through_kafka``).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from streams.data.handbook import read_handbook
from streams.errors import DataError
from streams.evaluation.ceiling import delay_ceiling, hidden_by_delay, reachable_frauds
from streams.evaluation.fit import HANDBOOK_15, fit_model, reference_model
from streams.evaluation.handbook_metrics import (
    auc_roc,
    average_precision,
    card_precision_at_k,
    day_number,
    remove_known_cards,
    two_stage_scores,
)
from streams.evaluation.outputs import assemble, clean, fold_mean, write_outputs
from streams.evaluation.protocol import Fold, folds
from streams.evaluation.stage1_stats import (
    RECALL_AT_SHARES,
    forward_rate_recall,
    max_window_share,
    recall_at_shares,
)
from streams.features.names import DAY_MS, FEATURE_SETS, MODEL_FEATURES
from streams.settings import Settings
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


def _screen(
    df: pl.DataFrame,
    settings: Settings,
    rules_dir: Path | None,
    progress: Callable[[int], None] | None,
) -> pl.DataFrame:
    from streams.stage1.history import screen_history  # the real stage-1 code

    return screen_history(df, settings, rules_dir=rules_dir, progress=progress)


def evaluate(
    data: Path,
    protocol: str,
    out_dir: Path,
    rules_dir: Path | None,
    settings: Settings,
    train_history_days: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    rounds: int | None = None,
    seed: int = 0,
    features: str = "all",
    through_kafka: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the protocol, write the output files into ``out_dir``, return the metrics.

    ``progress(n)`` is told of every ``n`` rows stage 1 has screened. ``train_history_days``
    widens each fold's training window backwards to that many days ending with its training
    week (all their labels are known before the test week).
    """
    if train_history_days is not None and train_history_days < 1:
        raise DataError(f"train_history_days must be at least 1, not {train_history_days}")
    if features not in FEATURE_SETS:
        choices = ", ".join(FEATURE_SETS)
        raise DataError(f"unknown feature set {features!r}; choose one of {choices}")
    if through_kafka and features != "all":
        raise DataError("--through-kafka runs the stage-2 worker, which serves all the features")
    opts = Options(train_history_days, rounds, seed, features)
    # stage 1 learns online from the start of the history, not from a model trained elsewhere
    settings = settings.model_copy(update={"stage1_warm_start": False})
    df = read_handbook(data)
    if "TX_FRAUD" not in df.columns:
        raise DataError(f"{data}: evaluation needs labels; the data has no TX_FRAUD column")
    if df.height == 0:
        raise DataError(f"{data}: no transactions")
    first_day = _date(int(df["ts_ms"].min()))  # type: ignore[arg-type]
    last_day = _date(int(df["ts_ms"].max()))  # type: ignore[arg-type]
    fold_list = folds(protocol, first_day, last_day)
    end_ms = (day_number(fold_list[-1].test_end) + 1) * DAY_MS
    df = df.filter(pl.col("ts_ms") < end_ms)

    log.info(
        "stage 1 over %d transactions (%s to %s)", df.height, first_day, fold_list[-1].test_end
    )
    screened = _check_screened(_screen(df, settings, rules_dir, progress), df)
    screened = screened.with_columns((pl.col("ts_ms") // DAY_MS).cast(pl.Int64).alias("day"))

    out_dir.mkdir(parents=True, exist_ok=True)
    results, scored_all = [], []
    for fold in fold_list:
        log.info(
            "fold %d: train %s to %s, test %s to %s",
            fold.index,
            fold.train_start,
            fold.train_end,
            fold.test_start,
            fold.test_end,
        )
        result, scored = _run_fold(fold, df, screened, out_dir, opts, first_day)
        results.append(result)
        scored_all.append(scored)
    scored = pl.concat(scored_all)
    options = {
        "train_history_days": opts.train_history_days or 7,
        "rounds": opts.rounds if opts.rounds is not None else "searched per fold",
        "seed": opts.seed,
        "features": opts.features,
    }
    metrics = assemble(protocol, data, results, options, df.height, _stream(screened))
    if through_kafka:
        from streams.evaluation.through_kafka import ThroughKafkaError
        from streams.evaluation.through_kafka import through_kafka as run_through_kafka

        summary, compared = run_through_kafka(
            df, scored, fold_list, out_dir, settings, rules_dir, say
        )
        summary["folds"] = [_kafka_measure(compared, fold.index) for fold in fold_list]
        summary["mean"] = fold_mean(summary["folds"])
        metrics["through_kafka"] = clean(summary)
    write_outputs(out_dir, metrics, scored)
    if through_kafka and not metrics["through_kafka"]["identical"]:
        tk = metrics["through_kafka"]
        raise ThroughKafkaError(
            f"the workers published other results than the in-process run: "
            f"{tk['forward_mismatches']} forward verdicts and {tk['score_mismatches']} scores "
            f"differ (largest {tk['max_abs_score_difference']}; first ids "
            f"{tk['first_mismatches']}); see {out_dir}/metrics.json"
        )
    return metrics


def _stream(screened: pl.DataFrame) -> dict[str, Any]:
    """Stage 1's forwarding over the whole screened history, in stream order (``ts_ms``, then
    the order stage 1 screened in)."""
    flagged = screened.sort("ts_ms", maintain_order=True)["FLAGGED"].to_numpy().astype(bool)
    return {
        "rows": len(flagged),
        "forward_rate": float(flagged.mean()) if len(flagged) else math.nan,
        "max_forward_share_5000": max_window_share(flagged, 5_000),
    }


def _kafka_measure(compared: pl.DataFrame, fold: int) -> dict[str, Any]:
    """A fold's metrics from the scores the workers published (known cards removed, as above)."""
    kept = compared.filter((pl.col("fold") == fold) & pl.col("evaluated"))
    out = _measure(kept, "kafka_score", stage1=False)
    del out["card_precision_at_100_daily"]
    rate, recall = forward_rate_recall(
        kept["kafka_flagged"].to_numpy(), kept["TX_FRAUD"].to_numpy()
    )
    out["stage1_forward_rate"], out["stage1_recall"] = rate, recall
    return out


def _run_fold(
    fold: Fold,
    df: pl.DataFrame,
    screened: pl.DataFrame,
    out_dir: Path,
    opts: Options,
    first_day: date,
) -> tuple[dict[str, Any], pl.DataFrame]:
    days = opts.train_history_days or 7
    lo = max(fold.train_end - timedelta(days=days - 1), first_day)
    train = _days(screened, lo, fold.train_end)
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
    model, trained_on = _cascade_model(fit, train, fold.index, out_dir / "models")
    test = _days(screened, fold.test_start, fold.test_end)
    flagged = test["FLAGGED"].to_numpy().astype(bool)
    single = _score_all(every_row, test)
    week = _days(screened, fold.train_start, fold.train_end)
    reference = np.asarray(
        reference_model(week, opts.seed).inplace_predict(
            test.select(HANDBOOK_15).to_numpy().astype(np.float32)
        ),
        dtype=np.float64,
    )
    final = _two_stage(model, test, flagged)
    # the same cascade with the every-row model as stage 2: what cascade training brings
    all_rows_cascade = _two_stage(every_row, test, flagged)
    blocked = ["BLOCKED"] if "BLOCKED" in test.columns else []
    scored = test.select(*KEEP_COLUMNS, *blocked, "day").with_columns(
        pl.lit(fold.index).alias("fold"),
        pl.Series("score", final),
        pl.Series("single_stage_score", single),
        pl.Series("reference_score", reference),
        pl.Series("all_rows_cascade_score", all_rows_cascade),
    )
    history = _days(screened, fold.train_start, fold.test_end).select(
        "CUSTOMER_ID", "day", "TX_FRAUD"
    )
    kept = remove_known_cards(scored, history, day_number(fold.train_start))
    scored = scored.join(
        kept.select("TRANSACTION_ID", pl.lit(True).alias("evaluated")),
        on="TRANSACTION_ID",
        how="left",
        maintain_order="left",
    ).with_columns(pl.col("evaluated").fill_null(False))
    kept = _with_scenario(kept, df)
    result: dict[str, Any] = {
        **fold.as_dict(),
        **_measure(kept, "score"),
        "single_stage": _measure(kept, "single_stage_score", stage1=False),
        "stage2_trained_on": trained_on,
        "two_stage_with_all_rows_model": _measure(kept, "all_rows_cascade_score", stage1=False),
        "handbook_reference": _measure(kept, "reference_score", stage1=False),
        "delay_ceiling": delay_ceiling(kept),
        "rounds": model.metadata["training"]["num_trees"],
        "params": {
            k: model.metadata["params"].get(k)
            for k in ("max_depth", "learning_rate", "scale_pos_weight")
        },
        "search_seconds": model.metadata.get("search", {}).get("seconds"),
        "model_version": model.version,
        "test_rows": test.height,
        "test_frauds": int(test["TX_FRAUD"].sum()),
        "evaluated_rows": kept.height,
        "evaluated_frauds": int(kept["TX_FRAUD"].sum()),
        "train_rows": train.height,
        "train_frauds": int(train["TX_FRAUD"].sum()),
        "stage2_train": model.metadata["class_balance"]["train"],
    }
    rate, recall = forward_rate_recall(flagged, test["TX_FRAUD"].to_numpy())
    result["before_known_card_removal"] = {"stage1_forward_rate": rate, "stage1_recall": recall}
    return result, scored


def _cascade_model(
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


def _two_stage(model: RiskModel, test: pl.DataFrame, flagged: np.ndarray) -> np.ndarray:
    """Scores of the cascade: the stage-2 model's on the forwarded rows, stage 1's below them
    elsewhere, and 1 where a `block` rule declined at stage 1 (its most certain verdict)."""
    stage2 = np.full(test.height, np.nan)
    if flagged.any():  # the stage-2 path: RiskModel.predict on the forwarded rows only
        stage2[flagged] = _predict(model, test.filter(pl.Series(flagged)))
    return np.where(
        _blocked(test),
        1.0,
        two_stage_scores(test["STAGE1_SCORE"].to_numpy(), flagged, stage2),
    )


def _measure(frame: pl.DataFrame, column: str, stage1: bool = True) -> dict[str, Any]:
    y, s = frame["TX_FRAUD"].to_numpy(), frame[column].to_numpy()
    cp_frame = frame.select("CUSTOMER_ID", "day", pl.col(column).alias("score"), "TX_FRAUD")
    cp, daily = card_precision_at_k(cp_frame, k=100)
    out: dict[str, Any] = {
        "auc_roc": auc_roc(y, s),
        "average_precision": average_precision(y, s),
        "card_precision_at_100": cp,
        "card_precision_at_100_daily": daily,
    }
    if stage1:
        out.update(_stage1_measure(frame))
    return out


def _blocked(frame: pl.DataFrame) -> np.ndarray:
    """Rows a `block` rule declined at stage 1 (none when the frame does not say)."""
    if "BLOCKED" not in frame.columns:
        return np.zeros(frame.height, dtype=bool)
    return frame["BLOCKED"].to_numpy().astype(bool)


def _stage1_measure(frame: pl.DataFrame) -> dict[str, Any]:
    """Stage 1 on the evaluated rows: its forwarding (``FLAGGED``, and ``BLOCKED``: a fraud a
    `block` rule declined is caught too) and what forwarding the top shares by ``STAGE1_SCORE``
    would catch, of all frauds and of the frauds not hidden by the label delay
    (``ceiling.reachable_frauds``; None without ``TX_FRAUD_SCENARIO``)."""
    flagged = frame["FLAGGED"].to_numpy().astype(bool) | _blocked(frame)
    y = frame["TX_FRAUD"].to_numpy()
    score = frame["STAGE1_SCORE"].to_numpy()
    rate, recall = forward_rate_recall(flagged, y)
    reachable = reachable_frauds(frame)
    return {
        "stage1_forward_rate": rate,
        "stage1_recall": recall,
        "stage1_recall_reachable": None
        if reachable is None
        else forward_rate_recall(flagged, reachable)[1],
        "stage1_recall_at": recall_at_shares(score, y, RECALL_AT_SHARES),
        "stage1_recall_reachable_at": None
        if reachable is None
        else recall_at_shares(score, reachable, RECALL_AT_SHARES),
    }


def _with_scenario(kept: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    """``kept`` with the data's scenario and whether each fraud was hidden by the label delay
    (``ceiling.hidden_by_delay``, on the whole history)."""
    if "TX_FRAUD_SCENARIO" not in df.columns:
        return kept
    scenario = df.select("TRANSACTION_ID", "TX_FRAUD_SCENARIO").with_columns(hidden_by_delay(df))
    keys = kept["TRANSACTION_ID"].dtype
    return kept.join(
        scenario.with_columns(pl.col("TRANSACTION_ID").cast(keys)),
        on="TRANSACTION_ID",
        how="left",
        maintain_order="left",
    )


def _predict(model: RiskModel, frame: pl.DataFrame) -> np.ndarray:
    X = frame.select(model.feature_names).to_numpy()
    parts = [model.predict(X[i : i + PREDICT_CHUNK])[0] for i in range(0, len(X), PREDICT_CHUNK)]
    return np.concatenate(parts) if parts else np.empty(0)


def _score_all(model: RiskModel, frame: pl.DataFrame) -> np.ndarray:
    """Stage 2 on every row: the booster's probability (what ``predict`` returns, without
    computing the per-feature contributions nobody reads here)."""
    if frame.height == 0:
        return np.empty(0)
    X = frame.select(model.feature_names).to_numpy().astype(np.float32)
    return np.asarray(model.booster.inplace_predict(X), dtype=np.float64)


def _days(frame: pl.DataFrame, first: date, last: date) -> pl.DataFrame:
    return frame.filter(pl.col("day").is_between(day_number(first), day_number(last)))


def _date(ts_ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ts_ms // DAY_MS)


def _check_screened(screened: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in (*KEEP_COLUMNS, "ts_ms", *MODEL_FEATURES) if c not in screened.columns]
    if missing:
        raise DataError(f"stage-1 history output lacks column(s) {', '.join(missing)}")
    if screened.height != df.height:
        raise DataError(f"stage 1 returned {screened.height} rows for {df.height} transactions")
    return screened
