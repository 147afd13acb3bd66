"""The worker's most recent screened traffic, to judge a new rule set before it acts.

On a rule reload the stage-1 worker evaluates the new rules on the last ``size`` transactions it
screened (their features and online scores as they were) and reports the share the rules alone
would forward (log and ``fraudstream_rules_forward_share``). Rules that forward more than the
maximum forward share crowd the online model out of stage 1's budget and flood stage 2.
"""

from __future__ import annotations

import numpy as np

from streams.features.names import MODEL_FEATURES
from streams.rules.model import RuleSet
from streams.schema import Transaction
from streams.stage1.screen import ScreenedBatch, rule_frame

MIN_ROWS = 1000  # fewer recent transactions than this say too little about a share


class RecentTraffic:
    def __init__(self, size: int = 20_000):
        self.size = size
        self._X = np.zeros((size, len(MODEL_FEATURES)))
        self._ts = np.zeros(size, dtype=np.int64)
        self._anomaly = np.zeros(size)
        self._probability = np.zeros(size)
        # the transactions themselves: rules over attributes and lists read them
        self._txs: list[Transaction | None] = [None] * size
        self._pos = 0
        self.filled = 0

    def add(self, out: ScreenedBatch) -> None:
        n = len(out.txs)
        if n == 0:
            return
        ts = np.fromiter((tx.ts_ms for tx in out.txs), dtype=np.int64, count=n)
        columns = (out.X, ts, out.anomaly, out.probability)
        txs = out.txs
        if n > self.size:
            columns = tuple(c[-self.size :] for c in columns)  # type: ignore[assignment]
            txs = txs[-self.size :]
            n = self.size
        buffers = (self._X, self._ts, self._anomaly, self._probability)
        first = min(n, self.size - self._pos)
        for buf, values in zip(buffers, columns, strict=True):
            buf[self._pos : self._pos + first] = values[:first]
            buf[: n - first] = values[first:]
        self._txs[self._pos : self._pos + first] = txs[:first]
        self._txs[: n - first] = txs[first:]
        self._pos = (self._pos + n) % self.size
        self.filled = min(self.size, self.filled + n)

    def rule_share(self, rules: RuleSet) -> float | None:
        """Share of the recent transactions the acting ``flag`` and ``review`` rules of
        ``rules`` forward, once `block` and `allow` rules took theirs (None with fewer than
        ``MIN_ROWS`` recent transactions)."""
        if self.filled < MIN_ROWS:
            return None
        k = self.filled
        ts = self._ts[:k]
        txs = [tx for tx in self._txs[:k] if tx is not None]
        inputs = rules.input_columns(txs, ts) if rules.inputs else []
        frame = rule_frame(
            self._X[:k], ts, self._anomaly[:k], self._probability[:k], rules.plan.fields, inputs
        )
        return float(np.mean(rules.evaluate(frame).settle().forward))
