"""Measure a rule set on labelled history with the real stage-1 code.

The whole history runs through stage 1 in stream order (so windows and online models are warm);
only transactions in ``[start, end)`` are counted. Per rule: hits, frauds caught, precision,
recall (of all frauds in the window); for the set: forward rate and recall (a fraud is caught
when stage 1 forwards it or a `block` rule declines it), with and without the online models'
contribution; what `block` rules declined and what `allow` rules let through (frauds
included); and, when the history names its fraud scenarios (``TX_FRAUD_SCENARIO``), the
recall per scenario.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from streams.rules.loader import load_rules
from streams.rules.model import RuleSet
from streams.settings import Settings
from streams.stage1.history import screen_history


@dataclass(frozen=True)
class Backtest:
    rules_version: str
    rows: int
    frauds: int
    forwarded: int
    forwarded_frauds: int
    rule_forwarded: int
    rule_forwarded_frauds: int
    per_rule: pl.DataFrame  # rule, shadow, hits, frauds_caught, precision, recall
    declined: int = 0  # declined at stage 1 by a `block` rule
    declined_frauds: int = 0
    allowed: int = 0  # approved at stage 1 by an `allow` rule
    allowed_frauds: int = 0
    per_scenario: pl.DataFrame | None = None  # scenario, frauds, caught, recall

    @property
    def forward_rate(self) -> float:
        return self.forwarded / self.rows if self.rows else 0.0

    @property
    def recall(self) -> float:
        """Frauds forwarded or declined at stage 1, over all frauds."""
        caught = self.forwarded_frauds + self.declined_frauds
        return caught / self.frauds if self.frauds else 0.0


def run_backtest(
    rules_dir: Path,
    history: pl.DataFrame,
    settings: Settings,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Backtest:
    rules = load_rules(rules_dir)
    screened = screen_history(history, settings, rules_dir, progress)
    window = screened
    if start_ms is not None:
        window = window.filter(pl.col("ts_ms") >= start_ms)
    if end_ms is not None:
        window = window.filter(pl.col("ts_ms") < end_ms)
    frauds = int(window.select((pl.col("TX_FRAUD") == 1).sum()).item())
    counts = _verdict_counts(window, [r.id for r in rules.rules if r.action in ("flag", "review")])
    return Backtest(
        rules.version,
        window.height,
        frauds,
        counts["fwd"],
        counts["fwd_fraud"],
        counts["rule_fwd"],
        counts["rule_fwd_fraud"],
        _rule_table(window, rules, frauds),
        declined=counts["declined"],
        declined_frauds=counts["declined_fraud"],
        allowed=counts["allowed"],
        allowed_frauds=counts["allowed_fraud"],
        per_scenario=_per_scenario(window),
    )


def _verdict_counts(window: pl.DataFrame, forwarding: list[str]) -> dict[str, int]:
    """Forwarded, forwarded by a ``forwarding`` rule, declined and allowed rows, and the frauds
    among each."""
    fraud = pl.col("TX_FRAUD") == 1
    rule_flag = (
        pl.col("FLAGGED")
        & pl.col("RULES_FIRED").list.eval(pl.element().is_in(forwarding)).list.any()
    )
    row = window.select(
        pl.col("FLAGGED").sum().alias("fwd"),
        (pl.col("FLAGGED") & fraud).sum().alias("fwd_fraud"),
        rule_flag.sum().alias("rule_fwd"),
        (rule_flag & fraud).sum().alias("rule_fwd_fraud"),
        pl.col("BLOCKED").sum().alias("declined"),
        (pl.col("BLOCKED") & fraud).sum().alias("declined_fraud"),
        pl.col("ALLOWED").sum().alias("allowed"),
        (pl.col("ALLOWED") & fraud).sum().alias("allowed_fraud"),
    ).row(0, named=True)
    return {k: int(v) for k, v in row.items()}


def _rule_table(window: pl.DataFrame, rules: RuleSet, frauds: int) -> pl.DataFrame:
    """Per rule (shadow ones included): hits, frauds caught, precision and recall."""
    hits = (
        window.select(pl.concat_list("RULES_FIRED", "SHADOW_RULES_FIRED").alias("rule"), "TX_FRAUD")
        .explode("rule")
        .drop_nulls("rule")
        .group_by("rule")
        .agg(pl.len().alias("hits"), (pl.col("TX_FRAUD") == 1).sum().alias("frauds_caught"))
    )
    return (
        pl.DataFrame(
            {
                "rule": [r.id for r in rules.rules],
                "action": [r.action for r in rules.rules],
                "shadow": [r.shadow for r in rules.rules],
                "enabled": [r.enabled for r in rules.rules],
            }
        )
        .join(hits, on="rule", how="left")
        .with_columns(pl.col("hits", "frauds_caught").fill_null(0).cast(pl.Int64))
        .with_columns(
            (pl.col("frauds_caught") / pl.col("hits")).fill_nan(0.0).alias("precision"),
            (pl.col("frauds_caught") / max(frauds, 1)).alias("recall"),
        )
    )


def _per_scenario(window: pl.DataFrame) -> pl.DataFrame | None:
    """Frauds caught (forwarded or declined at stage 1) per ``TX_FRAUD_SCENARIO``."""
    if "TX_FRAUD_SCENARIO" not in window.columns:
        return None
    return (
        window.filter(pl.col("TX_FRAUD") == 1)
        .group_by(pl.col("TX_FRAUD_SCENARIO").alias("scenario"))
        .agg(
            pl.len().alias("frauds"),
            (pl.col("FLAGGED") | pl.col("BLOCKED")).sum().alias("caught"),
        )
        .with_columns((pl.col("caught") / pl.col("frauds")).alias("recall"))
        .sort("scenario")
    )


def rules_over_budget(result: Backtest, max_share: float) -> str | None:
    """A warning when the rules alone forward more than the maximum forward share (stage 1 then
    forwards beyond its budget: the model gets none of it), else None."""
    share = result.rule_forwarded / max(result.rows, 1)
    if share <= max_share:
        return None
    return (
        f"the rules alone forward {share:.2%} of this traffic, more than the maximum forward "
        f"share {max_share:.2%} (stage1_max_forward_share): stage 1 would forward beyond its "
        "budget and its online model would forward nothing"
    )


def _actions_and_scenarios(result: Backtest, against: Backtest | None) -> list[str]:
    """Stage-1 declines and allows, and recall per fraud scenario, of each set."""
    runs = [(name, r) for name, r in (("this set", result), ("against", against)) if r is not None]
    lines: list[str] = []
    if any(r.declined or r.allowed for _, r in runs):
        lines += [
            "",
            "| decided at stage 1 | declined (block) | frauds declined | approved (allow) "
            "| frauds allowed through |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, r in runs:
            lines.append(
                f"| {name} | {r.declined} | {r.declined_frauds} | {r.allowed} | "
                f"{r.allowed_frauds} |"
            )
    if result.per_scenario is not None:
        lines += [
            "",
            "| fraud scenario | frauds | "
            + " | ".join(f"caught ({name})" for name, _ in runs)
            + " |",
            "| --- | ---: |" + " ---: |" * len(runs),
        ]
        others = [r.per_scenario for _, r in runs]
        for row in result.per_scenario.iter_rows(named=True):
            cells = []
            for table in others:
                hit = (
                    table.filter(pl.col("scenario") == row["scenario"])
                    if table is not None
                    else None
                )
                if hit is None or hit.is_empty():
                    cells.append("")
                else:
                    caught, recall = (
                        hit.row(0, named=True)["caught"],
                        hit.row(0, named=True)["recall"],
                    )
                    cells.append(f"{caught} ({recall:.1%})")
            lines.append(f"| {row['scenario']} | {row['frauds']} | " + " | ".join(cells) + " |")
    return lines


def report_markdown(
    result: Backtest, against: Backtest | None = None, max_share: float | None = None
) -> str:
    lines = [
        f"# Rule backtest — rule set {result.rules_version}",
        "",
        f"{result.rows} transactions, {result.frauds} frauds.",
        "",
        "| rule | action | shadow | hits | frauds caught | precision | recall |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result.per_rule.iter_rows(named=True):
        lines.append(
            f"| {row['rule']} | {row['action']} | {'yes' if row['shadow'] else ''} | "
            f"{row['hits']} | {row['frauds_caught']} | {row['precision']:.3f} | "
            f"{row['recall']:.3f} |"
        )
    lines += [
        "",
        "| whole set | forward rate | recall | forwarded | frauds forwarded |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in (("this set", result), ("against", against)):
        if r is None:
            continue
        lines.append(
            f"| {name} ({r.rules_version}) | {r.forward_rate:.4f} | {r.recall:.4f} | "
            f"{r.forwarded} | {r.forwarded_frauds} |"
        )
        lines.append(
            f"| {name}, rules only | {r.rule_forwarded / max(r.rows, 1):.4f} | "
            f"{r.rule_forwarded_frauds / max(r.frauds, 1):.4f} | {r.rule_forwarded} | "
            f"{r.rule_forwarded_frauds} |"
        )
    lines += _actions_and_scenarios(result, against)
    warning = rules_over_budget(result, max_share) if max_share is not None else None
    if warning is not None:
        lines += ["", f"**Warning:** {warning}."]
    if against is not None:
        lines += [
            "",
            f"Change: forward rate {result.forward_rate - against.forward_rate:+.4f}, "
            f"recall {result.recall - against.recall:+.4f}.",
        ]
    return "\n".join(lines) + "\n"
