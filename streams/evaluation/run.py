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
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from streams.data.handbook import read_handbook
from streams.errors import DataError
from streams.evaluation.fold import KEEP_COLUMNS, Options, run_fold
from streams.evaluation.handbook_metrics import day_number
from streams.evaluation.measure import kafka_measure
from streams.evaluation.outputs import assemble, clean, fold_mean, write_outputs
from streams.evaluation.protocol import Fold, folds
from streams.evaluation.stage1_stats import max_window_share
from streams.features.names import DAY_MS, FEATURE_SETS, MODEL_FEATURES
from streams.settings import Settings

log = logging.getLogger(__name__)


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
    _check_options(train_history_days, features, through_kafka)
    opts = Options(train_history_days, rounds, seed, features)
    # stage 1 learns online from the start of the history, not from a model trained elsewhere
    settings = settings.model_copy(update={"stage1_warm_start": False})
    df, fold_list = _load(data, protocol)
    first_day = _date(int(df["ts_ms"].min()))  # type: ignore[arg-type]
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
        result, scored = run_fold(fold, df, screened, out_dir, opts, first_day)
        results.append(result)
        scored_all.append(scored)
    scored = pl.concat(scored_all)
    metrics = assemble(protocol, data, results, opts.describe(), df.height, _stream(screened))
    if through_kafka:
        metrics["through_kafka"] = _through_kafka(
            df, scored, fold_list, out_dir, settings, rules_dir, say
        )
    write_outputs(out_dir, metrics, scored)
    if through_kafka:
        _check_identical(metrics["through_kafka"], out_dir)
    return metrics


def _check_options(train_history_days: int | None, features: str, through_kafka: bool) -> None:
    if train_history_days is not None and train_history_days < 1:
        raise DataError(f"train_history_days must be at least 1, not {train_history_days}")
    if features not in FEATURE_SETS:
        choices = ", ".join(FEATURE_SETS)
        raise DataError(f"unknown feature set {features!r}; choose one of {choices}")
    if through_kafka and features != "all":
        raise DataError("--through-kafka runs the stage-2 worker, which serves all the features")


def _load(data: Path, protocol: str) -> tuple[pl.DataFrame, list[Fold]]:
    """The labelled history up to the end of the protocol's last test week, and its folds."""
    df = read_handbook(data)
    if "TX_FRAUD" not in df.columns:
        raise DataError(f"{data}: evaluation needs labels; the data has no TX_FRAUD column")
    if df.height == 0:
        raise DataError(f"{data}: no transactions")
    first_day = _date(int(df["ts_ms"].min()))  # type: ignore[arg-type]
    last_day = _date(int(df["ts_ms"].max()))  # type: ignore[arg-type]
    fold_list = folds(protocol, first_day, last_day)
    end_ms = (day_number(fold_list[-1].test_end) + 1) * DAY_MS
    return df.filter(pl.col("ts_ms") < end_ms), fold_list


def _through_kafka(
    df: pl.DataFrame,
    scored: pl.DataFrame,
    fold_list: list[Fold],
    out_dir: Path,
    settings: Settings,
    rules_dir: Path | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The test weeks through the broker and both workers, measured per fold."""
    from streams.evaluation.through_kafka import through_kafka

    summary, compared = through_kafka(df, scored, fold_list, out_dir, settings, rules_dir, say)
    summary["folds"] = [kafka_measure(compared, fold.index) for fold in fold_list]
    summary["mean"] = fold_mean(summary["folds"])
    return clean(summary)


def _check_identical(tk: dict[str, Any], out_dir: Path) -> None:
    from streams.evaluation.through_kafka import ThroughKafkaError

    if not tk["identical"]:
        raise ThroughKafkaError(
            f"the workers published other results than the in-process run: "
            f"{tk['forward_mismatches']} forward verdicts and {tk['score_mismatches']} scores "
            f"differ (largest {tk['max_abs_score_difference']}; first ids "
            f"{tk['first_mismatches']}); see {out_dir}/metrics.json"
        )


def _stream(screened: pl.DataFrame) -> dict[str, Any]:
    """Stage 1's forwarding over the whole screened history, in stream order (``ts_ms``, then
    the order stage 1 screened in)."""
    flagged = screened.sort("ts_ms", maintain_order=True)["FLAGGED"].to_numpy().astype(bool)
    return {
        "rows": len(flagged),
        "forward_rate": float(flagged.mean()) if len(flagged) else math.nan,
        "max_forward_share_5000": max_window_share(flagged, 5_000),
    }


def _date(ts_ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ts_ms // DAY_MS)


def _check_screened(screened: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in (*KEEP_COLUMNS, "ts_ms", *MODEL_FEATURES) if c not in screened.columns]
    if missing:
        raise DataError(f"stage-1 history output lacks column(s) {', '.join(missing)}")
    if screened.height != df.height:
        raise DataError(f"stage 1 returned {screened.height} rows for {df.height} transactions")
    return screened
