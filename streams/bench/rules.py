"""What rules over attributes cost stage 1: the shipped rules against the shipped rules plus the
example attribute set (``examples/attribute-rules``: ten rules over declared attributes and
value lists, 23 rules in all), both over the same backlog of transactions that carry the
attributes (``simulate --attributes``). Lists get realistic sizes: a 10,000-card blocklist
and a 500-terminal allow-list, drawn from ids that do occur in the backlog."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from streams.bench import backlog
from streams.bench.stage1 import measure_stage1
from streams.rules.lists import write_list
from streams.rules.loader import load_rules, rule_files
from streams.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "attribute-rules"
BLOCKED_CARDS = 10_000
TRUSTED_TERMINALS = 500


@contextmanager
def attribute_rule_set(shipped: Path, df: pl.DataFrame, seed: int = 7) -> Iterator[Path]:
    """A temporary directory: the shipped rule files, the example's schema, lists and rules,
    the lists filled from ``df``'s ids (few enough that they rarely decide)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="fraudstream-rules-") as tmp:
        out = Path(tmp)
        for path in rule_files(shipped):
            shutil.copy(path, out / path.name)
        shutil.copytree(EXAMPLE, out, dirs_exist_ok=True)
        lists = out / "lists"
        cards = df["CUSTOMER_ID"].cast(pl.Utf8).unique().sort().to_numpy()
        terminals = df["TERMINAL_ID"].cast(pl.Utf8).unique().sort().to_numpy()
        fake = [f"blocked-{i}" for i in range(BLOCKED_CARDS)]  # a blocklist is mostly others'
        blocked = [*rng.choice(cards, min(20, len(cards)), replace=False).tolist(), *fake]
        write_list(lists / "blocked_cards.csv", dict.fromkeys(blocked[:BLOCKED_CARDS]))
        trusted = rng.choice(terminals, min(TRUSTED_TERMINALS, len(terminals)), replace=False)
        write_list(lists / "trusted_terminals.csv", dict.fromkeys(trusted.tolist()))
        write_list(lists / "risky_countries.csv", dict.fromkeys(["ZZ", "XX"]))
        yield out


ROUNDS = 5  # each set measured this many times, alternating: one short run moves by a third


def measure_rules_cost(
    s: Settings, tag: str, df: pl.DataFrame, total: int, warmup: int, rounds: int = ROUNDS
) -> dict[str, Any]:
    """Stage-1 throughput with the shipped rules alone and with the attribute set added, one
    worker each, over one backlog of ``df`` (simulated with attributes), measured ``rounds``
    times alternately; each set's median run and the ratio of the medians (with two runs
    each and their means, the ratio moved from 0.78 to 0.95 between runs of the same code)."""
    source = backlog.scoped(s, tag, "rules-source")
    backlog.make_topics(source)
    backlog.transaction_backlog(source, df)
    out: dict[str, Any] = {}
    with attribute_rule_set(s.rules_dir, df) as combined:
        sets = (("shipped", s.rules_dir), ("attribute_set", combined))
        for name, rules_dir in sets:
            rules = load_rules(rules_dir)
            out[name] = {
                "rules": len(rules),
                "rules_on_attributes": sum(1 for r in rules.rules if r.on_attributes),
                "runs": [],
            }
        for round_ in range(max(1, rounds)):
            for name, rules_dir in sets:
                scoped = backlog.scoped(
                    s, tag, f"stage1-rules-{name}-{round_}", shared_source=source.topic_transactions
                ).model_copy(update={"rules_dir": rules_dir})
                backlog.make_topics(scoped)
                out[name]["runs"].append(measure_stage1(scoped, total, warmup, 1))
    for name, _ in sets:
        out[name]["tps"] = round(float(np.median([r["tps"] for r in out[name]["runs"]])), 1)
    out["ratio"] = round(out["attribute_set"]["tps"] / out["shipped"]["tps"], 3)
    return out
