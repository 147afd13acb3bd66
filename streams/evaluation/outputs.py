"""The files ``evaluate`` writes: ``metrics.json``, ``predictions.csv`` and (via ``report``)
``report.md`` with its plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from streams.evaluation.report import write_report

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"

DEFINITIONS = {
    "metrics": "over each fold's test transactions after known-card removal (DATA.md)",
    "score": "two-stage: forwarded 0.5 + 0.5*stage2, others 0.25*stage1",
    "score_model": "stage 2 is trained on the training window's rows stage 1 forwarded "
    "(stage2_trained_on; every row when those lack a class)",
    "single_stage": "a stage-2 model trained on every row of the window, scoring every test "
    "transaction",
    "two_stage_with_all_rows_model": "the cascade with that every-row model as stage 2",
    "predictions_csv": "every test transaction of every fold, before known-card removal",
    "fold": "0-based index; mean is over folds",
    "stage1_recall_reachable": "stage-1 recall of the frauds not hidden by the label delay "
    "(all but scenario-2 frauds at terminals with no known fraud; null without scenarios)",
    "stage1_recall_at": "recall if stage 1 forwarded the top share of the evaluated rows by "
    "STAGE1_SCORE: exactly ceil(share * rows) rows, ties in stream order",
    "stream": "stage 1 over the whole screened history in stream order; "
    "max_forward_share_5000: largest forwarded share in any 5,000 consecutive transactions",
}


def clean(value: Any) -> Any:
    """JSON-ready: NaN becomes null, floats rounded to 6 decimals, numpy scalars unwrapped."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def fold_mean(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over folds of every float metric, nested dicts key by key (``stage1_recall_at``).

    NaN, None and missing values are skipped (a metric with none left is NaN); a key that is
    None in every fold stays None; lists, ints and strings are left out.
    """
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in results for k in r):
        values = [r.get(key) for r in results]
        dicts = [v for v in values if isinstance(v, dict)]
        if dicts:
            out[key] = fold_mean(dicts)
        elif any(isinstance(v, float) for v in values):
            vals = [v for v in values if isinstance(v, float) and not math.isnan(v)]
            out[key] = float(np.mean(vals)) if vals else math.nan
        elif all(v is None for v in values):
            out[key] = None
    return out


def assemble(
    protocol: str,
    data: Path,
    results: list[dict[str, Any]],
    options: dict[str, Any],
    rows: int,
    stream: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` document: per fold (``folds``, a list), ``mean`` and ``stream``
    (stage 1 over the whole screened history)."""
    mean = fold_mean(results)
    mean["evaluated_rows"] = sum(r["evaluated_rows"] for r in results)
    mean["evaluated_frauds"] = sum(r["evaluated_frauds"] for r in results)
    document = {
        "protocol": protocol,
        "data": str(data),
        "history_rows": rows,
        "folds": results,
        "mean": mean,
        "stream": stream,
        "options": options,
        "definitions": DEFINITIONS,
    }
    return dict(clean(document))


def write_outputs(out_dir: Path, metrics: dict[str, Any], scored: pl.DataFrame) -> None:
    """``scored``: every test row of every fold (``fold``, ``score``, ``FLAGGED``, ...)."""
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    scored.select(
        "TRANSACTION_ID",
        "fold",
        "score",
        pl.col("FLAGGED").cast(pl.Int8).alias("stage1_flagged"),
    ).write_csv(out_dir / PREDICTIONS_FILE)
    write_report(out_dir, metrics, scored)
