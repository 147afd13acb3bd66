"""Measure a rule set on labelled history with the real stage-1 code.

The whole history runs through stage 1 in stream order (so windows and online models are warm);
only transactions in ``[start, end)`` are counted. Per rule: hits, frauds caught, precision,
recall (of all frauds in the window); for the set: forward rate and recall, with and without the
online models' contribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from streams.rules.loader import load_rules
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

    @property
    def forward_rate(self) -> float:
        return self.forwarded / self.rows if self.rows else 0.0

    @property
    def recall(self) -> float:
        return self.forwarded_frauds / self.frauds if self.frauds else 0.0


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
    fraud = pl.col("TX_FRAUD") == 1
    frauds = int(window.select(fraud.sum()).item())
    rule_flag = (
        pl.col("RULES_FIRED")
        .list.eval(pl.element().is_in([r.id for r in rules.rules if r.action == "flag"]))
        .list.any()
    )
    counts = window.select(
        pl.col("FLAGGED").sum().alias("fwd"),
        (pl.col("FLAGGED") & fraud).sum().alias("fwd_fraud"),
        rule_flag.sum().alias("rule_fwd"),
        (rule_flag & fraud).sum().alias("rule_fwd_fraud"),
    ).row(0)
    hits = (
        window.select(pl.concat_list("RULES_FIRED", "SHADOW_RULES_FIRED").alias("rule"), "TX_FRAUD")
        .explode("rule")
        .drop_nulls("rule")
        .group_by("rule")
        .agg(pl.len().alias("hits"), (pl.col("TX_FRAUD") == 1).sum().alias("frauds_caught"))
    )
    table = (
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
    return Backtest(
        rules.version,
        window.height,
        frauds,
        int(counts[0]),
        int(counts[1]),
        int(counts[2]),
        int(counts[3]),
        table,
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
