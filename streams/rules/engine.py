"""Judging a micro-batch: every enabled rule in one polars ``select``, then numpy bookkeeping.

Per-row lists of fired rules are built only for the rows where something fired, so the common
case (nothing fired) costs a few vectorised operations for the whole batch.

Actions and their precedence, per transaction, over the acting rules (enabled, not shadow)
that fired: **block** (decline at stage 1) beats **allow** (approve at stage 1, never
forwarded), unless ``allow_beats_block`` is set (setting
``FRAUD_RULES_ALLOW_BEATS_BLOCK``); either beats **review** (forward, stage 2 decides at least
review) and **flag** (forward); **tag** only records. An allow therefore also beats the anomaly
score and the online model, which only ever add forwards. ``RuleResult.settle`` applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import polars as pl

from streams.errors import RuleError

if TYPE_CHECKING:
    from streams.rules.model import Rule


@dataclass(frozen=True)
class Plan:
    """The enabled rules of a set, compiled once: what to select and how to read the result."""

    ids: tuple[str, ...]
    exprs: tuple[pl.Expr, ...]
    fields: frozenset[str]
    flag_cols: npt.NDArray[np.intp]  # acting `flag` and `review` rules (both forward)
    review_cols: npt.NDArray[np.intp]
    block_cols: npt.NDArray[np.intp]
    allow_cols: npt.NDArray[np.intp]
    live_cols: npt.NDArray[np.intp]  # acting rules (flag and tag), highest score first
    live_ids: tuple[str, ...]
    live_reasons: tuple[str, ...]
    live_scores: npt.NDArray[np.float64]
    shadow_cols: npt.NDArray[np.intp]
    shadow_ids: tuple[str, ...]


@dataclass(frozen=True)
class RuleResult:
    """What the rules said about each row of a batch, in row order."""

    # an acting rule of that action fired (before precedence: see ``settle``)
    flag: npt.NDArray[np.bool_]  # `flag` or `review`: forward to stage 2
    review: npt.NDArray[np.bool_]  # `review`: stage 2 must decide at least review
    block: npt.NDArray[np.bool_]  # `block`: decline at stage 1
    allow: npt.NDArray[np.bool_]  # `allow`: approve at stage 1, never forwarded
    score: npt.NDArray[np.float64]  # highest score of the acting rules that fired, 0 if none
    fired: list[list[str]]  # ids of the acting rules that fired (flag and tag), by score
    shadow_fired: list[list[str]]  # ids of the shadow rules that fired (never act)
    reasons: list[list[str]]  # reason codes of `fired`, without repeats
    hits: dict[str, int]  # rows each enabled rule fired on, shadow rules included
    version: str  # the rule-set version that judged the batch

    def __len__(self) -> int:
        return len(self.flag)

    def settle(self, allow_beats_block: bool = False) -> Settled:
        """What each row gets once the actions' precedence is applied (see the module)."""
        block, allow = self.block, self.allow
        if allow_beats_block:
            block = block & ~allow
        else:
            allow = allow & ~block
        decided = block | allow
        return Settled(self.flag & ~decided, self.review & ~decided, block, allow)


@dataclass(frozen=True)
class Settled:
    """The rules' verdict per row after precedence: at most one of block / allow / forward."""

    forward: npt.NDArray[np.bool_]
    review: npt.NDArray[np.bool_]  # forwarded rows stage 2 must decide at least review
    block: npt.NDArray[np.bool_]
    allow: npt.NDArray[np.bool_]


def _cols(indices: Sequence[int]) -> npt.NDArray[np.intp]:
    return np.asarray(indices, dtype=np.intp)


def build_plan(rules: Sequence[Rule]) -> Plan:
    enabled = [rule for rule in rules if rule.enabled]
    live = sorted(
        (i for i, rule in enumerate(enabled) if not rule.shadow), key=lambda i: -enabled[i].score
    )
    shadow = [i for i, rule in enumerate(enabled) if rule.shadow]
    fields: set[str] = set()
    for rule in enabled:
        fields.update(rule.expr.meta.root_names())
    return Plan(
        ids=tuple(rule.id for rule in enabled),
        exprs=tuple(rule.expr.fill_null(False).alias(f"r{i}") for i, rule in enumerate(enabled)),
        fields=frozenset(fields),
        flag_cols=_cols([i for i in live if enabled[i].action in ("flag", "review")]),
        review_cols=_cols([i for i in live if enabled[i].action == "review"]),
        block_cols=_cols([i for i in live if enabled[i].action == "block"]),
        allow_cols=_cols([i for i in live if enabled[i].action == "allow"]),
        live_cols=_cols(live),
        live_ids=tuple(enabled[i].id for i in live),
        live_reasons=tuple(enabled[i].reason for i in live),
        live_scores=np.asarray([enabled[i].score for i in live], dtype=np.float64),
        shadow_cols=_cols(shadow),
        shadow_ids=tuple(enabled[i].id for i in shadow),
    )


def _per_row(
    matrix: npt.NDArray[np.bool_], ids: Sequence[str], reasons: Sequence[str] | None, n: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Per-row id lists and reason lists (repeats dropped), empty where nothing fired.

    Rows that fired the same set of rules share one template, built once per distinct set
    (a batch has a handful); each row still gets its own list.
    """
    fired: list[list[str]] = [[] for _ in range(n)]
    codes_of: list[list[str]] = [[] for _ in range(n)] if reasons is not None else []
    width = matrix.shape[1]
    rows = np.flatnonzero(matrix.any(axis=1)) if width else np.empty(0, dtype=np.intp)
    if not len(rows):
        return fired, codes_of
    hit = matrix[rows]
    if width <= 62:  # one integer per set of fired rules
        patterns, which = np.unique(
            hit @ (np.int64(1) << np.arange(width, dtype=np.int64)), return_inverse=True
        )
        columns = [[j for j in range(width) if p >> j & 1] for p in patterns.tolist()]
    else:
        patterns, which = np.unique(hit, axis=0, return_inverse=True)
        columns = [np.flatnonzero(p).tolist() for p in patterns]
    id_templates = [[ids[j] for j in cols] for cols in columns]
    reason_templates: list[list[str]] = []
    if reasons is not None:
        for cols in columns:
            unique: list[str] = []
            for j in cols:
                if reasons[j] not in unique:
                    unique.append(reasons[j])
            reason_templates.append(unique)
    for row, k in zip(rows.tolist(), which.reshape(-1).tolist(), strict=True):
        fired[row] += id_templates[k]
        if reasons is not None:
            codes_of[row] += reason_templates[k]
    return fired, codes_of


def _any(matrix: npt.NDArray[np.bool_], cols: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    return np.asarray(matrix[:, cols].any(axis=1), dtype=np.bool_)


def evaluate_plan(plan: Plan, frame: pl.DataFrame, version: str) -> RuleResult:
    """Judge every row of ``frame``; nulls (missing values) never make a rule fire."""
    n = frame.height
    if plan.exprs and n:
        missing = plan.fields.difference(frame.columns)
        if missing:
            raise RuleError(
                [f"rule input lacks field(s) used by rules: {', '.join(sorted(missing))}"]
            )
        matrix = frame.select(plan.exprs).to_numpy().astype(np.bool_, copy=False)
    else:
        matrix = np.zeros((n, len(plan.exprs)), dtype=np.bool_)
    live = matrix[:, plan.live_cols]
    if live.shape[1]:
        score = np.where(live, plan.live_scores, 0.0).max(axis=1)
    else:
        score = np.zeros(n, dtype=np.float64)
    fired, reasons = _per_row(live, plan.live_ids, plan.live_reasons, n)
    shadow_fired, _ = _per_row(matrix[:, plan.shadow_cols], plan.shadow_ids, None, n)
    counts = matrix.sum(axis=0).tolist()
    return RuleResult(
        flag=_any(matrix, plan.flag_cols),
        review=_any(matrix, plan.review_cols),
        block=_any(matrix, plan.block_cols),
        allow=_any(matrix, plan.allow_cols),
        score=score,
        fired=fired,
        shadow_fired=shadow_fired,
        reasons=reasons,
        hits=dict(zip(plan.ids, (int(c) for c in counts), strict=True)),
        version=version,
    )
