"""Stage 1 over a labelled history in stream order (backtest, train, evaluate, replay warm-up).

Each label is published 7 days after its transaction, as ``fraudstream produce`` does, and goes
through the same event-time ``LabelGate`` as in the stage-1 worker (terminal table up to each
segment's last transaction, online classifier up to its first), so this runner and a worker fed
by the labels topic compute the same features and scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from streams.data.handbook import extra_fields
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS, MODEL_FEATURES
from streams.rules.loader import load_rules
from streams.schema import Transaction
from streams.settings import Settings
from streams.stage1.labelgate import ClassifierFeed, LabelGate, label_of, screen_segment
from streams.stage1.screen import ScreenedBatch, Screener

_DELAY_MS = LABEL_DELAY_DAYS * DAY_MS


def frame_transactions(df: pl.DataFrame) -> list[Transaction]:
    """The frame's rows as transactions; extra columns (``extra_columns``: attributes) become
    each one's extra fields, as if it had come from the topic."""
    cols = [
        df["TRANSACTION_ID"].cast(pl.Utf8).to_list(),
        df["CUSTOMER_ID"].cast(pl.Utf8).to_list(),
        df["TERMINAL_ID"].cast(pl.Utf8).to_list(),
        df["TX_AMOUNT"].cast(pl.Float64).to_list(),
        df["ts_ms"].cast(pl.Int64).to_list(),
    ]
    raws = extra_fields(df)
    if raws is None:
        return [Transaction(t, c, m, a, ts, {}) for t, c, m, a, ts in zip(*cols, strict=True)]
    return [
        Transaction(t, c, m, a, ts, raw) for t, c, m, a, ts, raw in zip(*cols, raws, strict=True)
    ]


def screen_history(
    df: pl.DataFrame,
    settings: Settings,
    rules_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    screener: Screener | None = None,
) -> pl.DataFrame:
    """One row per input row (same order): ids, label, features, stage-1 scores and verdict
    (``FLAGGED``: forwarded; ``BLOCKED``: declined at stage 1; ``ALLOWED``: approved by an
    allow rule)."""
    if screener is None:
        screener = Screener.from_settings(settings, load_rules(rules_dir or settings.rules_dir))
    txs = frame_transactions(df)
    labels = df["TX_FRAUD"].cast(pl.Int64).to_list() if "TX_FRAUD" in df.columns else None
    n, size = len(txs), settings.stage1_batch_size
    outputs = _Outputs(n)
    gate = LabelGate()
    feed = ClassifierFeed(gate)
    published = 0  # labels offered to the gate so far (stream order = publication order)
    for start in range(0, n, size):
        batch = txs[start : start + size]
        if labels is not None:
            last = max(tx.ts_ms for tx in batch)
            while published < n and txs[published].ts_ms + _DELAY_MS <= last:
                tx = txs[published]
                gate.offer(label_of(tx, labels[published]), tx.ts_ms + _DELAY_MS)
                published += 1
        outputs.add(start, screen_segment(screener, gate, feed, batch))
        gate.trim([feed.cursor])
        if progress is not None:
            progress(len(batch))
    return outputs.frame(df)


class _Outputs:
    """The screened rows' features, scores and verdicts, filled batch by batch."""

    def __init__(self, n: int) -> None:
        self.X = np.empty((n, len(MODEL_FEATURES)))
        self.anomaly, self.prob, self.rule_score, self.score = (np.empty(n) for _ in range(4))
        self.flagged, self.blocked, self.allowed = (np.zeros(n, dtype=bool) for _ in range(3))
        self.fired: list[list[str]] = []
        self.shadow: list[list[str]] = []

    def add(self, start: int, out: ScreenedBatch) -> None:
        end = start + len(out.txs)
        self.X[start:end] = out.X
        self.anomaly[start:end], self.prob[start:end] = out.anomaly, out.probability
        self.rule_score[start:end], self.score[start:end] = out.rule_score, out.stage1_score
        self.flagged[start:end] = out.flagged
        self.blocked[start:end], self.allowed[start:end] = out.blocked, out.allowed
        self.fired.extend(out.fired)
        self.shadow.extend(out.shadow_fired)

    def frame(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df``'s ids, label and scenario beside everything stage 1 computed."""
        keep = [
            c
            for c in (
                "TRANSACTION_ID",
                "ts_ms",
                "CUSTOMER_ID",
                "TERMINAL_ID",
                "TX_FRAUD",
                "TX_FRAUD_SCENARIO",
            )
            if c in df.columns
        ]
        result = pl.DataFrame(self.X, schema=MODEL_FEATURES)
        return pl.concat([df.select(keep), result], how="horizontal").with_columns(
            pl.Series("ANOMALY_SCORE", self.anomaly),
            pl.Series("FRAUD_PROBABILITY", self.prob),
            pl.Series("RULE_SCORE", self.rule_score),
            pl.Series("STAGE1_SCORE", self.score),
            pl.Series("FLAGGED", self.flagged),
            pl.Series("BLOCKED", self.blocked),
            pl.Series("ALLOWED", self.allowed),
            pl.Series("RULES_FIRED", self.fired, dtype=pl.List(pl.Utf8)),
            pl.Series("SHADOW_RULES_FIRED", self.shadow, dtype=pl.List(pl.Utf8)),
        )
