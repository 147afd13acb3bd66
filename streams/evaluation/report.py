"""``report.md`` and its plots for an evaluation run.

Plots use matplotlib's object API (``Figure``; no pyplot state, no display). All figures are over
the evaluated test transactions (after known-card removal), pooled over folds, except the
recall-at-share plot, drawn from ``metrics.json``'s per-fold and mean ``stage1_recall_at``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from streams.evaluation.stage1_stats import forward_rate_recall, rule_contributions, threshold_sweep

REPORT_FILE = "report.md"
PR_PLOT = "pr_curve.png"
TRADEOFF_PLOT = "stage1_forward_rate_recall.png"
RULES_PLOT = "rule_contribution.png"
RECALL_AT_PLOT = "stage1_recall_at.png"

# DATA.md, "Published results on this data (test folds)".
PUBLISHED = (
    ("Ch. 3 XGBoost", 0.862, 0.639, 0.273),
    ("Ch. 5 XGBoost, best on validation (mean of 4 folds)", 0.869, 0.687, 0.303),
    ("Ch. 5 random forest, best on test", 0.875, 0.678, 0.303),
)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def plot_pr(path: Path, frame: pl.DataFrame) -> bool:
    y = frame["TX_FRAUD"].to_numpy()
    if len(np.unique(y)) < 2:
        return False
    fig = Figure(figsize=(5.5, 4.5), dpi=90)
    ax = fig.subplots()
    for column, label in (("score", "two-stage"), ("single_stage_score", "stage 2 on everything")):
        precision, recall, _ = precision_recall_curve(y, frame[column].to_numpy())
        ax.plot(recall, precision, lw=1.5, label=label)
    _, recall_1 = forward_rate_recall(frame["FLAGGED"].to_numpy(), y)
    ax.axvline(recall_1, color="grey", ls=":", lw=1, label=f"stage-1 recall {recall_1:.3f}")
    ax.axhline(float(np.mean(y)), color="grey", ls="--", lw=1, label="fraud rate")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="precision-recall, test weeks pooled",
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_tradeoff(path: Path, frame: pl.DataFrame) -> bool:
    """Forward rate against recall when thresholding STAGE1_SCORE, whole range and zoomed in,
    with stage 1's actual operating point (its FLAGGED decisions)."""
    y = frame["TX_FRAUD"].to_numpy()
    if not y.any():
        return False
    sweep = threshold_sweep(frame["STAGE1_SCORE"].to_numpy(), y, points=400)
    rate, recall = forward_rate_recall(frame["FLAGGED"].to_numpy(), y)
    zoom = min(1.0, max(0.05, 4 * rate))
    fig = Figure(figsize=(10, 4.5), dpi=90)
    for ax, xmax in zip(fig.subplots(1, 2), (1.0, zoom), strict=True):
        ax.plot(sweep["forward_rate"], sweep["recall"], lw=1.5, label="stage-1 score >= threshold")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random forwarding")
        ax.scatter(
            [rate],
            [recall],
            color="C3",
            zorder=3,
            label=f"operating point ({rate:.1%} forwarded, recall {recall:.3f})",
        )
        ax.set(
            xlabel="forward rate (forwarded / all)",
            ylabel="recall (forwarded frauds / frauds)",
            xlim=(0, xmax),
            ylim=(0, 1.02),
            title="stage 1: forward rate against recall"
            if xmax == 1.0
            else f"zoomed in: forward rate <= {xmax:.0%}",
        )
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _recall_at_points(recall_at: dict[str, Any] | None) -> tuple[list[float], list[float]]:
    points = sorted((float(q), r) for q, r in (recall_at or {}).items() if r is not None)
    return [q for q, _ in points], [r for _, r in points]


def plot_recall_at(path: Path, metrics: dict[str, Any]) -> bool:
    """Stage-1 recall when forwarding the top shares by stage-1 score (``stage1_recall_at``),
    per fold and their mean (reachable frauds too when known), with the operating point."""
    mean = metrics["mean"]
    xs, ys = _recall_at_points(mean.get("stage1_recall_at"))
    if not xs:
        return False
    fig = Figure(figsize=(5.5, 4.5), dpi=90)
    ax = fig.subplots()
    for i, fold in enumerate(metrics["folds"]):
        fx, fy = _recall_at_points(fold.get("stage1_recall_at"))
        ax.plot(fx, fy, color="C0", alpha=0.35, lw=1, marker=".", label="folds" if i == 0 else None)
    ax.plot(xs, ys, color="C0", lw=2, marker="o", label="mean, all frauds")
    rx, ry = _recall_at_points(mean.get("stage1_recall_reachable_at"))
    if rx:
        ax.plot(rx, ry, color="C2", lw=2, ls="--", marker="o", label="mean, reachable frauds")
    rate, recall = mean.get("stage1_forward_rate"), mean.get("stage1_recall")
    if rate is not None and recall is not None:
        ax.scatter([rate], [recall], color="C3", zorder=3, label="operating point (mean)")
    ax.set(
        xlabel="share of traffic forwarded (top by stage-1 score)",
        ylabel="recall",
        xlim=(0, max(xs[-1], rate or 0) * 1.05),
        ylim=(0, 1.02),
        title="stage 1: recall at forward share",
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_rules(path: Path, rules: pl.DataFrame) -> bool:
    if rules.height == 0:
        return False
    items = rules.sort("frauds_forwarded")
    fig = Figure(figsize=(6, 0.35 * items.height + 1.5), dpi=90)
    ax = fig.subplots()
    names = items["rule"].to_list()
    ax.barh(names, items["frauds"].to_list(), color="C7", label="frauds it fired on")
    ax.barh(names, items["frauds_forwarded"].to_list(), label="... that stage 1 forwarded")
    ax.barh(
        names,
        items["frauds_forwarded_no_other_rule"].to_list(),
        label="... with no other rule firing",
    )
    ax.set(xlabel="frauds (evaluated test transactions)", title="frauds caught per rule")
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return True


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric_rows(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| fold | test week | AUC ROC | avg precision | CP@100 | single-stage AUC | "
        "single-stage AP | single-stage CP@100 | AP, stage 2 of every row | forward rate | "
        "stage-1 recall | stage-1 recall (reachable) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(str(f["fold"]), f"{f['test_start']} to {f['test_end']}", f) for f in metrics["folds"]]
    rows.append(("**mean**", "", metrics["mean"]))
    for name, week, m in rows:
        s, every_row = m["single_stage"], m.get("two_stage_with_all_rows_model") or {}
        lines.append(
            f"| {name} | {week} | {_f(m['auc_roc'])} | {_f(m['average_precision'])} | "
            f"{_f(m['card_precision_at_100'])} | {_f(s['auc_roc'])} | "
            f"{_f(s['average_precision'])} | {_f(s['card_precision_at_100'])} | "
            f"{_f(every_row.get('average_precision'))} | {_f(m['stage1_forward_rate'], 4)} | "
            f"{_f(m['stage1_recall'])} | "
            f"{_f(m.get('stage1_recall_reachable'))} |"
        )
    return lines


def render(metrics: dict[str, Any], rules: pl.DataFrame, plots: dict[str, bool]) -> str:
    """``report.md``: the folds, the metrics beside the published ones and the ceiling, stage 1
    and its rules, and how to read them."""
    lines = [
        *_fold_lines(metrics),
        "## Metrics",
        *_metric_rows(metrics),
        "",
        *_published_lines(metrics),
    ]
    if plots.get(PR_PLOT):
        lines += [f"![precision-recall curves]({PR_PLOT})", ""]
    lines += _stage1_lines(metrics, rules, plots)
    lines += HOW_TO_READ
    return "\n".join(lines)


def _fold_lines(metrics: dict[str, Any]) -> list[str]:
    opts = metrics["options"]
    lines = [
        f"# Evaluation: `{metrics['protocol']}`",
        "",
        f"Data: `{metrics['data']}` ({metrics['history_rows']} transactions screened by stage 1 "
        "in stream order, up to the end of the last test week). Stage-2 model per fold, trained "
        "on the rows stage 1 forwarded (single-stage: a model of every row): "
        f"{opts['train_history_days']} training day(s) ending with the training week, "
        f"{opts['rounds']} boosting rounds, seed {opts['seed']}.",
        "",
        "## Folds",
        "| fold | training | delay | test | train rows (frauds) | test rows | evaluated rows "
        "(frauds) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for f in metrics["folds"]:
        lines.append(
            f"| {f['fold']} | {f['train_start']} to {f['train_end']} | {f['delay_start']} to "
            f"{f['delay_end']} | {f['test_start']} to {f['test_end']} | {f['train_rows']} "
            f"({f['train_frauds']}) | {f['test_rows']} | {f['evaluated_rows']} "
            f"({f['evaluated_frauds']}) |"
        )
    return [*lines, ""]


def _published_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "Published on the handbook's data (DATA.md), for comparison:",
        "",
        "| model | AUC ROC | avg precision | CP@100 |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {a:.3f} | {p:.3f} | {c:.3f} |" for name, a, p, c in PUBLISHED],
        "",
    ]
    ceiling = metrics["mean"].get("delay_ceiling")
    if ceiling:
        lines += [
            "**Label-delay ceiling** (no model can do better): a fraud at a terminal whose "
            "compromise is not yet known under the 7-day delay looks genuine at decision time "
            f"({ceiling['invisible_fraud_share']:.1%} of the evaluated frauds). Scoring every "
            f"other fraud perfectly gives AUC ROC {ceiling['auc_roc']:.3f}, average precision "
            f"{ceiling['average_precision']:.3f}, CP@100 {ceiling['card_precision_at_100']:.3f} "
            "(`delay_ceiling` in `metrics.json`; see streams/evaluation/ceiling.py).",
            "",
        ]
    return lines


def _stage1_lines(
    metrics: dict[str, Any], rules: pl.DataFrame, plots: dict[str, bool]
) -> list[str]:
    lines = ["## Stage 1", ""]
    stream = metrics.get("stream")
    if stream:
        lines += [
            f"Over the whole screened history stage 1 forwarded {_f(stream['forward_rate'], 4)} "
            f"of the transactions, at most {_f(stream['max_forward_share_5000'], 4)} of any "
            "5,000 consecutive ones. Recall (reachable): of the frauds not hidden by the label "
            "delay (see the ceiling above).",
            "",
        ]
    if plots.get(TRADEOFF_PLOT):
        lines += [f"![stage-1 forward rate against recall]({TRADEOFF_PLOT})", ""]
    if plots.get(RECALL_AT_PLOT):
        lines += [f"![stage-1 recall at forward share]({RECALL_AT_PLOT})", ""]
    if rules.height:
        lines += [
            "| rule | fired | frauds | frauds forwarded | ... no other rule fired | precision |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| `{r['rule']}` | {r['fired']} | {r['frauds']} | {r['frauds_forwarded']} | "
            f"{r['frauds_forwarded_no_other_rule']} | {r['precision']:.3f} |"
            for r in rules.iter_rows(named=True)
        ]
        lines.append("")
    else:
        lines += ["No rule fired on the evaluated test transactions.", ""]
    if plots.get(RULES_PLOT):
        lines += [f"![frauds caught per rule]({RULES_PLOT})", ""]
    return lines


HOW_TO_READ = [
    "## How to read this",
    "- Protocol of DATA.md: the label of a transaction is used only 7 days after it; on test "
    "day T the cards with a fraud from the training week's start through T − 8 are removed; "
    "AUC ROC and average precision over each fold's remaining test transactions; CP@100 per "
    "day (cards detected earlier removed, always divided by 100), averaged over the week. "
    "The mean is over folds.",
    "- Two-stage score: forwarded transactions score 0.5 + 0.5 × stage-2 score, the others "
    "0.25 × stage-1 score, so every forwarded transaction ranks above every other one.",
    "- Single stage: the same stage-2 model scoring every test transaction.",
    "- Forward rate and recall: stage 1's forwarded / all and forwarded frauds / all frauds "
    "over the evaluated test transactions (before known-card removal in `metrics.json`, "
    "`before_known_card_removal`).",
    "- `predictions.csv` holds every test transaction of every fold, **before** known-card "
    "removal, with the two-stage score; `fold` is the 0-based fold index.",
    "- Plots pool the evaluated transactions of all folds.",
    "",
]


def write_report(out_dir: Path, metrics: dict[str, Any], scored: pl.DataFrame) -> Path:
    """Write ``report.md`` and its plots; ``scored`` is every test row with ``evaluated``."""
    evaluated = scored.filter(pl.col("evaluated"))
    rules = rule_contributions(evaluated)
    plots = {
        PR_PLOT: plot_pr(out_dir / PR_PLOT, evaluated),
        TRADEOFF_PLOT: plot_tradeoff(out_dir / TRADEOFF_PLOT, evaluated),
        RULES_PLOT: plot_rules(out_dir / RULES_PLOT, rules),
        RECALL_AT_PLOT: plot_recall_at(out_dir / RECALL_AT_PLOT, metrics),
    }
    path = out_dir / REPORT_FILE
    path.write_text(render(metrics, rules, plots), encoding="utf-8")
    return path
