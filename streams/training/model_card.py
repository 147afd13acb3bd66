"""The model card (``MODEL_CARD.md``) and its plots (``pr_curve.png``, ``feature_importance.png``).

Plots use matplotlib's object API (``Figure``, Agg canvas): no pyplot global state, no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from streams.stage2.model import CARD_FILE

PR_PLOT = "pr_curve.png"
IMPORTANCE_PLOT = "feature_importance.png"


def plot_pr_curve(path: Path, y: np.ndarray, scores: np.ndarray, title: str) -> bool:
    """Precision-recall curve on the validation window; False (no file) with a single class."""
    if len(np.unique(y)) < 2:
        return False
    precision, recall, _ = precision_recall_curve(y, scores)
    fig = Figure(figsize=(5, 4), dpi=80)
    ax = fig.subplots()
    ax.plot(recall, precision, lw=1.5)
    ax.axhline(float(np.mean(y)), color="grey", ls="--", lw=1, label="fraud rate")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    return True


def plot_importance(path: Path, importance: dict[str, float], title: str) -> bool:
    """Horizontal bars of each feature's share of the total gain."""
    if not importance:
        return False
    total = sum(importance.values()) or 1.0
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6, 0.28 * len(items) + 1.2), dpi=80)
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v / total for _, v in items])
    ax.set(xlabel="share of total gain", title=title)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    return True


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_card(meta: dict[str, Any], plots: dict[str, bool]) -> str:
    train, valid = meta["training_window"], meta["validation_window"]
    balance, metrics = meta["class_balance"], meta["metrics"]
    booster = meta.get("training", {})
    importance = meta.get("feature_importance_gain", {})
    total_gain = sum(importance.values()) or 1.0
    lines = [
        f"# Model card: `{meta['version']}`",
        "",
        "## Intended use",
        "Stage-2 risk model of fraudstream. It scores the card transactions that stage 1 flags and "
        "returns a fraud probability in [0, 1]; `config/policy.yaml` turns the score into approve, "
        "review or decline, and TreeSHAP contributions (`pred_contribs`) give each decision's "
        "reason codes. Inputs are the stream features of `streams.features` "
        f"({len(meta['feature_names'])} features, order below), computed by the same code that "
        "serves them. It is not a standalone decision system: a person reviews the review band.",
        "",
        "## Data",
        f"- Source: {meta.get('data', {}).get('source') or 'handbook-format transactions'}",
        f"- History used for features: {meta.get('data', {}).get('history_rows', 'n/a')} rows, "
        f"{meta.get('data', {}).get('history_start', '?')} to "
        f"{meta.get('data', {}).get('history_end', '?')}",
        f"- Training window: {train['start']} to {train['end']} (end exclusive)",
        f"- Label delay: {meta['label_delay_days']} days (labels of the training window are all "
        "known when the delay has passed after its end)",
        f"- Validation window: {valid['start']} to {valid['end']} (end exclusive), after the delay;"
        " cards with a fraud already known on the day are removed (handbook protocol)",
        "",
        "| set | rows | frauds | fraud rate |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in ("train", "validation"):
        b = balance[key]
        rate = b["frauds"] / b["rows"] if b["rows"] else 0.0
        lines.append(f"| {key} | {b['rows']} | {b['frauds']} | {rate:.3%} |")
    lines += [
        "",
        "## Metrics (validation window)",
        "| AUC ROC | average precision | card precision@100 |",
        "| ---: | ---: | ---: |",
        f"| {_fmt(metrics.get('auc_roc'))} | {_fmt(metrics.get('average_precision'))} "
        f"| {_fmt(metrics.get('card_precision_at_100'))} |",
        "",
    ]
    if plots.get(PR_PLOT):
        lines += [f"![precision-recall curve on the validation window]({PR_PLOT})", ""]
    lines += [
        "## Training",
        f"- XGBoost {meta['libraries'].get('xgboost', '?')}, seed {meta['seed']}, "
        f"{booster.get('num_trees', '?')} trees kept (best iteration "
        f"{booster.get('best_iteration', '?')} of at most {booster.get('max_rounds', '?')}, "
        f"early stopping after {booster.get('early_stopping_rounds', '?')} rounds on validation "
        f"`{booster.get('early_stopping_metric', '?')}`)",
        "- Parameters: " + ", ".join(f"`{k}={v}`" for k, v in sorted(meta["params"].items())),
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["libraries"].items())),
        f"- Created: {meta.get('created_at', '?')}; model sha256 `{meta.get('model_sha256', '?')}`",
        "",
        "## Features (model order) and share of total gain",
        "| # | feature | gain share |",
        "| ---: | --- | ---: |",
    ]
    for i, name in enumerate(meta["feature_names"], 1):
        lines.append(f"| {i} | `{name}` | {importance.get(name, 0.0) / total_gain:.3f} |")
    lines.append("")
    if plots.get(IMPORTANCE_PLOT):
        lines += [f"![feature importance (gain)]({IMPORTANCE_PLOT})", ""]
    lines += [
        "## Limitations",
        "- The validation window also chose the number of trees (early stopping), so its metrics "
        "are slightly optimistic; measure on a later, untouched period before relying on them.",
        "- Trained on all transactions of the window, served on the flagged subset only: scores "
        "of flagged transactions are shifted upwards compared with the training population.",
        "- Terminal risk features depend on labels arriving with the 7-day delay; a stalled "
        "label feed makes them stale and lowers the score of compromised terminals.",
        "- Fraud patterns drift: retrain on recent data regularly and compare a challenger "
        "against this champion before promoting it.",
        "- Probabilities are calibrated only for the fraud rate of the training window.",
    ]
    if "simulat" in str(meta.get("data", {}).get("source", "")).lower():
        lines.append(
            "- Trained on simulated data: a default that makes the system run end to end, "
            "not a model for real transactions."
        )
    return "\n".join(lines) + "\n"


def write_card(
    out_dir: Path,
    meta: dict[str, Any],
    y_valid: np.ndarray,
    scores_valid: np.ndarray,
) -> None:
    """Write the plots and ``MODEL_CARD.md`` into ``out_dir``."""
    plots = {
        PR_PLOT: plot_pr_curve(
            out_dir / PR_PLOT, y_valid, scores_valid, f"validation PR curve, {meta['version']}"
        ),
        IMPORTANCE_PLOT: plot_importance(
            out_dir / IMPORTANCE_PLOT,
            meta.get("feature_importance_gain", {}),
            "feature importance (total gain)",
        ),
    }
    (out_dir / CARD_FILE).write_text(render_card(meta, plots), encoding="utf-8")
