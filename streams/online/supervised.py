"""Online fraud probability: river's StandardScaler | LogisticRegression, learning from labels.

Labels arrive days after their transactions (the labels topic), so the classifier learns from
the feature vector the transaction had then, kept in a bounded cache keyed by transaction id.
Learning follows river (``learn_one``); scoring a whole micro-batch uses the same weights in one
numpy expression, which equals river's ``predict_proba_one`` (tested) at a fraction of the cost.
The cache is a ring of ``cache_size`` float32 rows plus a dict from transaction id to its slot:
a batch is stored with one array copy, and the oldest rows are overwritten first.
Genuine labels are subsampled (``genuine_rate``), so learning keeps up with the stream and the
classes are less unbalanced; every fraud label is learnt. The subsample is not reweighted: the
model ranks transactions (stage 1 forwards the top share of traffic), and weighting each genuine
label by 1 / rate made the SGD steps ten times larger for the majority class, which kept the
model from converging (on the handbook's test weeks it ranked 27-90 % of the reachable frauds in
the top tenth, against 96-98 % without the weights, and 97-98 % for a batch logistic regression
on the same features).
Beside each cached row the classifier keeps the transaction's card (``card_key``) and time, and
how stage 1 treated it (``mark``: the share of traffic that ranked above it, whether it was
forwarded); a fraud label hands those and its publication time to ``on_fraud`` (the recall
controller of ``streams.stage1.policy``, which leaves out frauds of cards known compromised).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import river
from river import compose, linear_model, optim, preprocessing

from streams.features.names import MODEL_FEATURES


def card_key(card_id: str) -> int:
    """A card's key in the label cache (CRC-32 of its id: stable across restarts, unlike
    ``hash``). The recall controller tells known compromised cards by it."""
    return zlib.crc32(card_id.encode())


if TYPE_CHECKING:
    from streams.checkpoint.codec import StateReader, StateWriter

# heavy-tailed features, learnt on a log scale
_LOG_FEATURES = {
    "TX_AMOUNT",
    "CARD_SECONDS_SINCE_LAST_TX",
    "CARD_AMOUNT_RATIO_30DAY",
    "CARD_AMOUNT_RATIO_MEDIAN_30DAY",
    "CARD_MAX_RATIO_14DAY",
    "TERMINAL_FRAUD_RUN",
}


# The amount's ratio to the card's own median, as a quadratic: if a compromise multiplies a
# card's amounts, the log-likelihood ratio "compromised against not" of a roughly normal amount
# is quadratic in that ratio, which one log-scaled input cannot express (a batch logistic
# regression on the 28 days before each handbook test week kept 0.3-0.8 points more of the
# reachable frauds in the top tenth with it, on the handbook data and two simulated variants).
# The cap keeps the SGD steps bounded: ratios above it are large-amount payments, which the
# log-scaled inputs already rank high.
_RATIO = MODEL_FEATURES.index("CARD_AMOUNT_RATIO_MEDIAN_30DAY")
RATIO_CAP = 10.0
DERIVED_INPUTS = ["CARD_AMOUNT_RATIO_MEDIAN_CAPPED", "CARD_AMOUNT_RATIO_MEDIAN_CAPPED_SQUARED"]
INPUTS = [*MODEL_FEATURES, *DERIVED_INPUTS]
"""What the classifier learns from: the features (heavy-tailed ones on a log scale), then the
derived inputs."""


def _transform(row: list[float] | np.ndarray) -> dict[str, float]:
    x = {
        name: (math.log1p(max(v, 0.0)) if name in _LOG_FEATURES else float(v))
        for name, v in zip(MODEL_FEATURES, row, strict=True)
    }
    ratio = min(max(float(row[_RATIO]), 0.0), RATIO_CAP)
    x[DERIVED_INPUTS[0]] = ratio
    x[DERIVED_INPUTS[1]] = ratio * ratio
    return x


def _inputs(X: np.ndarray) -> np.ndarray:
    """``_transform`` of every row of ``X`` at once (columns in ``INPUTS`` order)."""
    ratio = np.clip(X[:, _RATIO].astype(np.float64), 0.0, RATIO_CAP)
    Z = np.where(_LOG_MASK, np.log1p(np.maximum(X, 0.0)), X)
    return np.column_stack([Z, ratio, ratio * ratio])


STATE_FORMAT = 1
WARM_START_FILE = "stage1_online.json"
"""The online classifier's warm start in a model directory (written by ``train``)."""

_LOG_MASK = np.array([name in _LOG_FEATURES for name in MODEL_FEATURES])


class OnlineClassifier:
    def __init__(self, cache_size: int = 500_000, genuine_rate: float = 0.1, lr: float = 0.005):
        # lr: SGD's step. 0.005 kept more of the reachable frauds in stage 1's forwards than
        # 0.01 on the handbook data and on each simulated variant alike (stage 1 alone, the
        # protocol's test weeks), and 0.02 fewer: a noisier model ranks worse.
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(lr)),
        )
        self.lr = lr
        self.cache_size = max(1, cache_size)
        # the label cache: feature rows in a ring (allocated on first use), and where each
        # remembered transaction is
        self._rows = np.zeros((0, len(MODEL_FEATURES)), dtype=np.float32)
        self._share = np.zeros(0, dtype=np.float32)  # share of traffic ranked above (``mark``)
        self._forwarded = np.zeros(0, dtype=bool)
        self._card = np.zeros(0, dtype=np.uint32)  # ``card_key`` of the transaction's card
        self._ts = np.zeros(0, dtype=np.int64)  # its event time
        self._ids: list[str | None] = []
        self._slot_of: dict[str, int] = {}
        self._next = 0
        self.genuine_rate = genuine_rate
        self.learned = 0
        self.missed_labels = 0
        # (share, forwarded, card key, transaction time, label publication time) of a fraud
        self.on_fraud: Callable[[float, bool, int, int, int], None] | None = None
        # numpy view of the river model, rebuilt when it has learnt since (``learned``)
        self._vectors: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
        self._vectors_at = -1

    # --- scoring -------------------------------------------------------------------------
    def _vector(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        scaler, lr = self.model.steps["StandardScaler"], self.model.steps["LogisticRegression"]
        means = np.array([scaler.means.get(n, 0.0) for n in INPUTS])
        var = np.array([scaler.vars.get(n, 0.0) for n in INPUTS])
        inv_std = np.where(var > 0, 1.0 / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
        weights = np.array([lr.weights.get(n, 0.0) for n in INPUTS])
        return means, inv_std, weights, float(lr.intercept)

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        """Fraud probability of each row of ``X`` (MODEL_FEATURES order)."""
        if self.learned == 0:
            return np.zeros(len(X))
        if self._vectors is None or self._vectors_at != self.learned:
            self._vectors, self._vectors_at = self._vector(), self.learned
        means, inv_std, weights, intercept = self._vectors
        Z = _inputs(X)
        # feature by feature, in a fixed order: a matrix product's summation order depends on
        # the number of rows (BLAS kernels), and a last-bit difference would make a transaction's
        # probability depend on how it was batched (a crash, a replay)
        scaled = (Z - means) * (inv_std * weights)
        margin = np.full(len(X), intercept)
        for j in range(scaled.shape[1]):
            margin += scaled[:, j]
        return 1.0 / (1.0 + np.exp(-np.clip(margin, -30, 30)))

    def predict_one(self, row: list[float]) -> float:
        """river's own prediction, for tests and single lookups."""
        return float(self.model.predict_proba_one(_transform(row)).get(True, 0.0))

    # --- learning from delayed labels ----------------------------------------------------
    def remember(
        self,
        transaction_ids: list[str],
        X: np.ndarray,
        cards: np.ndarray | None = None,
        ts: np.ndarray | None = None,
    ) -> np.ndarray:
        """Keep each row of ``X`` until its label arrives (the oldest go first when full), with
        its card's ``card_key`` and its event time (``cards``, ``ts``: 0 when not given);
        returns the cache slots of the last rows kept (all of them unless more than the cache)."""
        n, size = len(transaction_ids), self.cache_size
        if not self._ids:
            self._allocate()
        if n > size:
            transaction_ids, X, n = transaction_ids[-size:], X[-size:], size
        start = self._next
        slots = (start + np.arange(n)) % size
        self._card[slots] = 0 if cards is None else cards[-n:]
        self._ts[slots] = 0 if ts is None else ts[-n:]
        first = min(n, size - start)
        self._store(start, transaction_ids[:first], X[:first])
        if first < n:
            self._store(0, transaction_ids[first:], X[first:n])
        self._next = (start + n) % size
        return slots

    def _allocate(self) -> None:
        size = self.cache_size
        self._rows = np.zeros((size, len(MODEL_FEATURES)), dtype=np.float32)
        self._share = np.ones(size, dtype=np.float32)
        self._forwarded = np.zeros(size, dtype=bool)
        self._card = np.zeros(size, dtype=np.uint32)
        self._ts = np.zeros(size, dtype=np.int64)
        self._ids = [None] * size

    def mark(self, slots: np.ndarray, share: np.ndarray, forwarded: np.ndarray) -> None:
        """Record how stage 1 treated the rows kept at ``slots`` (``remember``): the share of
        traffic that ranked above each, and whether it was forwarded (the last rows given)."""
        n = len(slots)
        if n:
            self._share[slots] = share[-n:]
            self._forwarded[slots] = forwarded[-n:]

    def _store(self, at: int, transaction_ids: list[str], X: np.ndarray) -> None:
        end = at + len(transaction_ids)
        slot_of = self._slot_of
        olds = self._ids[at:end]
        if olds.count(None) != len(olds):  # the ring has wrapped: evict what the slots held
            for slot, old in enumerate(olds, start=at):
                # a transaction remembered again since (redelivered) keeps its newer slot
                if old is not None and slot_of.get(old) == slot:
                    del slot_of[old]
        self._ids[at:end] = transaction_ids
        self._rows[at:end] = X
        slot_of.update(zip(transaction_ids, range(at, end), strict=True))

    def cached(self) -> int:
        """Transactions whose features wait for their label."""
        return len(self._slot_of)

    def learn_label(self, transaction_id: str, fraud: bool, known_ms: int | None = None) -> bool:
        """Learn from one label if its features are cached; returns whether it was learnt.
        ``known_ms``: when the label was published (default: the transaction's time)."""
        if transaction_id not in self._slot_of:
            self.missed_labels += 1
            return False
        return self.learn_label_if_cached(transaction_id, fraud, known_ms)

    def learn_label_if_cached(
        self, transaction_id: str, fraud: bool, known_ms: int | None = None
    ) -> bool:
        """``learn_label`` for a label that may be another partition's (not counted as missed
        when its features are not here)."""
        slot = self._slot_of.pop(transaction_id, None)
        if slot is None:
            return False
        if fraud:
            weight = 1.0
            if self.on_fraud is not None:
                ts_ms = int(self._ts[slot])
                self.on_fraud(
                    float(self._share[slot]),
                    bool(self._forwarded[slot]),
                    int(self._card[slot]),
                    ts_ms,
                    ts_ms if known_ms is None else known_ms,
                )
        else:
            if (zlib.crc32(transaction_id.encode()) % 10_000) >= self.genuine_rate * 10_000:
                return False
            weight = 1.0
        row = self._rows[slot].tolist()  # float32 values, as stored
        self.model.learn_one(_transform(row), bool(fraud), w=weight)
        self.learned += 1
        return True

    # --- warm start: the state as JSON (no pickle) -------------------------------------------
    def learn_rows(self, transaction_ids: list[str], X: np.ndarray, fraud: np.ndarray) -> int:
        """Learn labelled rows in order, as their labels would arrive (the same subsampling of
        genuine labels); returns how many were learnt. ``train`` warm-starts stage 1 with it."""
        before = self.learned
        for start in range(0, len(transaction_ids), 50_000):
            ids = transaction_ids[start : start + 50_000]
            self.remember(ids, X[start : start + 50_000])
            for tid, label in zip(ids, fraud[start : start + 50_000].tolist(), strict=True):
                self.learn_label_if_cached(tid, bool(label))
        return self.learned - before

    def state_dict(self) -> dict[str, Any]:
        """The learnt state (river's scaler statistics and the regression's weights), JSON-safe,
        with the library version and feature names it belongs to."""
        scaler, lr = self.model.steps["StandardScaler"], self.model.steps["LogisticRegression"]
        return {
            "format": STATE_FORMAT,
            "river_version": river.__version__,
            "features": list(MODEL_FEATURES),
            "inputs": list(INPUTS),
            "genuine_rate": self.genuine_rate,
            "learning_rate": self.lr,
            "learned": self.learned,
            "scaler": {
                "counts": dict(scaler.counts),
                "means": dict(scaler.means),
                "vars": dict(scaler.vars),
            },
            "weights": dict(lr._weights),
            "intercept": float(lr.intercept),
            "iterations": int(lr.optimizer.n_iterations),
        }

    def load_state_dict(self, state: dict[str, Any], where: str = "state") -> None:
        """Continue from ``state_dict``; raises ``ModelError`` when it is for other features or
        another format."""
        from streams.errors import ModelError

        if state.get("format") != STATE_FORMAT:
            raise ModelError(f"{where}: online classifier state format {state.get('format')!r}")
        if state.get("features") != list(MODEL_FEATURES):
            raise ModelError(
                f"{where}: online classifier state is for features {state.get('features')}, "
                f"stage 1 computes {MODEL_FEATURES}"
            )
        # a state written before the derived inputs existed has no "inputs": it is continued,
        # and their weights start at zero and learn from the labels
        if state.get("inputs", list(INPUTS)) != list(INPUTS):
            raise ModelError(
                f"{where}: online classifier state is for inputs {state.get('inputs')}, "
                f"stage 1 learns from {INPUTS}"
            )
        scaler, lr = self.model.steps["StandardScaler"], self.model.steps["LogisticRegression"]
        scaler.counts.clear()
        scaler.counts.update({k: int(v) for k, v in state["scaler"]["counts"].items()})
        scaler.means.clear()
        scaler.means.update({k: float(v) for k, v in state["scaler"]["means"].items()})
        scaler.vars.clear()
        scaler.vars.update({k: float(v) for k, v in state["scaler"]["vars"].items()})
        for name, weight in state["weights"].items():
            lr._weights[name] = float(weight)
        lr.intercept = float(state["intercept"])
        lr.optimizer.n_iterations = int(state["iterations"])
        self.genuine_rate = float(state["genuine_rate"])
        self.learned = int(state["learned"])
        self._vectors, self._vectors_at = None, -1

    def save_state(self, w: StateWriter, name: str) -> None:
        """The learnt state and the label cache's waiting rows (a checkpoint)."""
        slots = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        w.meta[name] = {
            "model": self.state_dict(),
            "cache_size": self.cache_size,
            "allocated": bool(self._ids),
            "next": self._next,
            "missed": self.missed_labels,
        }
        w.strings(f"{name}.ids", list(self._slot_of))
        w.numpy(f"{name}.slots", slots)
        if self._ids:
            w.numpy(f"{name}.rows", self._rows[slots])
            w.numpy(f"{name}.share", self._share[slots])
            w.numpy(f"{name}.forwarded", self._forwarded[slots])
            w.numpy(f"{name}.card", self._card[slots])
            w.numpy(f"{name}.ts", self._ts[slots])

    def load_state(self, r: StateReader, name: str) -> None:
        meta = r.meta[name]
        self.load_state_dict(meta["model"], r.where)
        self.cache_size = int(meta["cache_size"])
        self._next, self.missed_labels = int(meta["next"]), int(meta["missed"])
        self._slot_of = {}
        self._ids = []
        if not meta["allocated"]:
            return
        self._allocate()
        ids, slots = r.strings(f"{name}.ids"), r.numpy(f"{name}.slots")
        self._rows[slots] = r.numpy(f"{name}.rows")
        self._share[slots] = r.numpy(f"{name}.share")
        self._forwarded[slots] = r.numpy(f"{name}.forwarded")
        if r.has(f"{name}.card"):  # checkpoints before the known-card rule have neither
            self._card[slots] = r.numpy(f"{name}.card")
            self._ts[slots] = r.numpy(f"{name}.ts")
        for tid, slot in zip(ids, slots.tolist(), strict=True):
            self._ids[slot] = tid
            self._slot_of[tid] = slot

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.state_dict(), indent=1, sort_keys=True) + "\n")

    def load(self, path: Path) -> None:
        from streams.errors import ModelError

        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read the online classifier state: {exc}") from None
        self.load_state_dict(state, str(path))
