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
    holdout = meta.get("holdout")
    lines = [f"# Model card: `{meta['version']}`", ""]
    lines += _use_lines(meta)
    lines += _data_lines(meta)
    lines += _metric_lines(meta["metrics"], holdout)
    lines += _policy_lines(meta.get("policy"), holdout)
    if plots.get(PR_PLOT):
        lines += [f"![precision-recall curve on the validation window]({PR_PLOT})", ""]
    lines += _search_lines(meta.get("search"))
    lines += _training_lines(meta)
    lines += _feature_lines(meta)
    lines += family_lines()
    if plots.get(IMPORTANCE_PLOT):
        lines += [f"![feature importance (gain)]({IMPORTANCE_PLOT})", ""]
    lines += _limitation_lines(meta)
    return "\n".join(lines) + "\n"


def _use_lines(meta: dict[str, Any]) -> list[str]:
    return [
        "## Intended use",
        "Stage-2 risk model of fraudstream. It scores the card transactions that stage 1 flags and "
        "returns a risk score in [0, 1]; `config/policy.yaml` turns the score into approve, "
        "review or decline, and TreeSHAP contributions (`pred_contribs`) give each decision's "
        "reason codes. Inputs are the stream features of `streams.features` "
        f"({len(meta['feature_names'])} features, order below), computed by the same code that "
        "serves them. It is not a standalone decision system: a person reviews the review band.",
        "",
    ]


def _data_lines(meta: dict[str, Any]) -> list[str]:
    train, valid = meta["training_window"], meta["validation_window"]
    data = meta.get("data", {})
    lines = [
        "## Data",
        f"- Source: {data.get('source') or 'handbook-format transactions'}",
        f"- History used for features: {data.get('history_rows', 'n/a')} rows, "
        f"{data.get('history_start', '?')} to {data.get('history_end', '?')}",
        f"- Training window: {train['start']} to {train['end']} (end exclusive)",
        f"- Training rows: {meta.get('training_rows', 'all')} (stage 2 scores only what stage 1 "
        "forwards; the validation, holdout and policy rows are of the same kind)",
        f"- Label delay: {meta['label_delay_days']} days (labels of the training window are all "
        "known when the delay has passed after its end)",
        f"- Validation window: {valid['start']} to {valid['end']} (end exclusive): the training "
        "window's last days; the search trains on the days before them, then the chosen "
        "parameters are refit on the whole window. Cards with a fraud already known on the day "
        "are removed (handbook protocol)",
        "",
        "| set | rows | frauds | fraud rate |",
        "| --- | ---: | ---: | ---: |",
    ]
    balance = meta["class_balance"]
    for key in ("window", "train", "validation"):
        if key not in balance:  # models written before cascade training have no "window"
            continue
        b = balance[key]
        rate = b["frauds"] / b["rows"] if b["rows"] else 0.0
        lines.append(f"| {key} | {b['rows']} | {b['frauds']} | {rate:.3%} |")
    lines.append("")
    return lines


def _metric_lines(metrics: dict[str, Any], holdout: dict[str, Any] | None) -> list[str]:
    lines = [
        "## Metrics",
        "| window | model | AUC ROC | average precision | card precision@100 |",
        "| --- | --- | ---: | ---: | ---: |",
        f"| validation | the search's (without these days) | {_fmt(metrics.get('auc_roc'))} "
        f"| {_fmt(metrics.get('average_precision'))} "
        f"| {_fmt(metrics.get('card_precision_at_100'))} |",
    ]
    if holdout:
        hm = holdout["metrics"]
        lines.append(
            f"| holdout {holdout['start']} to {holdout['end']} (after the delay) | this one "
            f"| {_fmt(hm.get('auc_roc'))} | {_fmt(hm.get('average_precision'))} "
            f"| {_fmt(hm.get('card_precision_at_100'))} |"
        )
    lines.append("")
    return lines


def _training_lines(meta: dict[str, Any]) -> list[str]:
    booster = meta.get("training", {})
    return [
        "## Training",
        f"- XGBoost {meta['libraries'].get('xgboost', '?')}, seed {meta['seed']}, "
        f"{booster.get('num_trees', '?')} trees kept (best iteration "
        f"{booster.get('best_iteration', '?')} of at most {booster.get('max_rounds', '?')}, "
        f"early stopping after {booster.get('early_stopping_rounds', '?')} rounds on validation "
        f"`{booster.get('early_stopping_metric', '?')}`), refit on the whole window",
        "- Parameters: " + ", ".join(f"`{k}={v}`" for k, v in sorted(meta["params"].items())),
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["libraries"].items())),
        f"- Created: {meta.get('created_at', '?')}; model sha256 `{meta.get('model_sha256', '?')}`",
        "",
    ]


def _feature_lines(meta: dict[str, Any]) -> list[str]:
    importance = meta.get("feature_importance_gain", {})
    total_gain = sum(importance.values()) or 1.0
    lines = [
        "## Features (model order) and share of total gain",
        "| # | feature | gain share |",
        "| ---: | --- | ---: |",
    ]
    for i, name in enumerate(meta["feature_names"], 1):
        lines.append(f"| {i} | `{name}` | {importance.get(name, 0.0) / total_gain:.3f} |")
    lines.append("")
    return lines


def _limitation_lines(meta: dict[str, Any]) -> list[str]:
    if str(meta.get("training_rows", "all")).startswith("all"):
        population = (
            "- Trained on all transactions of the window, served on the flagged subset only: "
            "scores of flagged transactions are shifted upwards compared with the training "
            "population."
        )
    else:
        population = (
            "- Trained on the transactions stage 1 forwarded with the rules and online model of "
            "training time: a rule change that forwards other kinds of transactions shows stage "
            "2 rows unlike those it learnt; retrain after such a change."
        )
    lines = [
        "## Limitations",
        "- The validation window also chose the parameters and the number of trees, so its "
        "metrics are slightly optimistic; the holdout row (when the data covers it) is not.",
        population,
        "- Terminal risk features depend on labels arriving with the 7-day delay; a stalled "
        "label feed makes them stale and lowers the score of compromised terminals.",
        "- Fraud patterns drift: retrain on recent data regularly and compare a challenger "
        "against this champion before promoting it.",
        "- Scores are not calibrated probabilities (a class weight raises them): read them as a "
        "ranking; the policy thresholds are set on that ranking, so they follow each retrain.",
    ]
    if "simulat" in str(meta.get("data", {}).get("source", "")).lower():
        lines.append(
            "- Trained on simulated data: a default that makes the system run end to end, "
            "not a model for real transactions."
        )
    return lines


def _policy_lines(policy: dict[str, Any] | None, holdout: dict[str, Any] | None) -> list[str]:
    if not policy:
        return []
    v = policy["validation"]
    lines = [
        "## Policy thresholds (used when `config/policy.yaml` says `thresholds: model`)",
        f"- review from score {policy['review_threshold']:.6g}: at most "
        f"{policy['review_capacity_cards_per_day']:g} cards a day on the validation days "
        "(a card by its highest score that day)",
        f"- decline from score {policy['decline_threshold']:.6g}: the lowest score from which "
        f"at least {policy['decline_precision']:.0%} of the validation transactions are fraud",
        "",
        "| window | cards reviewed or declined a day | frauds caught | declines a day "
        "| decline precision |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| validation | {v['cards_reviewed_or_declined_per_day']} "
        f"| {_fmt(v['fraud_recall_reviewed_or_declined'])} | {v['declined_per_day']} "
        f"| {_fmt(v['decline_precision'])} |",
    ]
    if holdout and holdout.get("policy"):
        h = holdout["policy"]
        lines.append(
            f"| holdout | {h['cards_reviewed_or_declined_per_day']} "
            f"| {_fmt(h['fraud_recall_reviewed_or_declined'])} | {h['declined_per_day']} "
            f"| {_fmt(h['decline_precision'])} |"
        )
    return [*lines, ""]


def _search_lines(search: dict[str, Any] | None) -> list[str]:
    if not search:
        return []
    lines = [
        "## Search",
        f"Seeded grid on the training window minus its last {search['validation_days']} days, "
        "early stopping on those days' `aucpr`; choice: "
        f"{search['selection']} (tolerance {search['space']['cost_tolerance']}); "
        f"{search['seconds']} s.",
        "",
        "| max_depth | learning_rate | scale_pos_weight | rounds | validation AP | chosen |",
        "| ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for t in search["trials"]:
        weight = t["scale_pos_weight"]
        if isinstance(weight, str):
            weight = f"{weight} ({t['scale_pos_weight_value']:g})"
        lines.append(
            f"| {t['max_depth']} | {t['learning_rate']} | {weight} | {t['rounds']} "
            f"| {t['valid_average_precision']:.4f} | {'yes' if t['chosen'] else ''} |"
        )
    return [*lines, ""]


def family_lines() -> list[str]:
    """The feature families and their measured contribution (``FAMILY_ABLATION``)."""
    from streams.training.families import FAMILY_ABLATION, FAMILY_NOTE

    if not FAMILY_ABLATION:
        return []
    lines = [
        "## Feature families: measured contribution",
        FAMILY_NOTE,
        "",
        "| features | count | AP | AUC ROC | CP@100 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in FAMILY_ABLATION:
        lines.append(
            f"| {row['features']} | {row['count']} | {row['average_precision']:.3f} "
            f"| {row['auc_roc']:.3f} | {row['card_precision_at_100']:.3f} |"
        )
    return [*lines, ""]


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
