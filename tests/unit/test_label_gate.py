"""The event-time label gate: labels reach the terminal table and the online classifier when the
stream's event time allows, whatever their arrival order and however the stream is batched."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from streams.evaluation.through_kafka import Published, compare, summarise
from streams.recovery.labelgate import LabelGate, segments
from streams.recovery.state import PartitionedScreener
from streams.rules.loader import load_rules
from streams.schema import Transaction
from streams.settings import Settings
from tests.conftest import REPO

DAY = 86_400_000


def test_labels_wait_for_their_time_in_publication_order() -> None:
    gate = LabelGate()
    gate.offer(("b", "t1", 20, 1), 20 + 7 * DAY)
    gate.offer(("a", "t1", 10, 0), 10 + 7 * DAY)
    gate.offer(("c", "t2", 10, 1), 10 + 7 * DAY)  # same time as "a": arrival order
    assert gate.watermark == 20 + 7 * DAY and len(gate) == 3
    assert list(gate.for_terminals(7 * DAY)) == []
    assert [lab[0] for lab in gate.for_terminals(10 + 7 * DAY)] == ["a", "c"]
    # the classifier only gets what the terminal table already has, up to its own horizon
    assert list(gate.for_classifier(10 + 7 * DAY - 1)) == []
    assert list(gate.for_classifier(30 * DAY)) == [("a", 0), ("c", 1)]
    assert [lab[0] for lab in gate.for_terminals(30 * DAY)] == ["b"]
    assert list(gate.for_classifier(30 * DAY)) == [("b", 1)] and len(gate) == 0


@pytest.mark.parametrize(
    ("position", "n", "every", "expected"),
    [
        (0, 5, 2, [(0, 2), (2, 4), (4, 5)]),
        (3, 5, 2, [(0, 1), (1, 3), (3, 5)]),
        (4, 2, 4, [(0, 2)]),
        (7, 0, 4, []),
    ],
)
def test_segments_are_cut_at_fixed_stream_positions(position, n, every, expected) -> None:
    assert list(segments(position, n, every)) == expected


def _stream(n: int, seed: int = 0) -> tuple[list[Transaction], list[int]]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 40 * DAY, n))
    txs = [
        Transaction(
            str(i),
            f"c{rng.integers(60)}",
            f"t{rng.integers(30)}",
            float(rng.gamma(2, 30)),
            int(t),
            {},
        )
        for i, t in enumerate(ts)
    ]
    frauds = (rng.random(n) < 0.1).astype(int).tolist()
    return txs, frauds


def _run(batches: list[int], early_labels: bool) -> np.ndarray:
    """Screen one partition in the given batch sizes; labels offered either all up front (read
    ahead of the stream) or each just before the batch that reaches its time."""
    settings = Settings(stage1_batch_size=64, rules_dir=REPO / "rules")
    state = PartitionedScreener(settings, load_rules(settings.rules_dir))
    txs, frauds = _stream(sum(batches))
    labels = [
        ((tx.transaction_id, tx.terminal_id, tx.ts_ms, f), tx.ts_ms + 7 * DAY)
        for tx, f in zip(txs, frauds, strict=True)
    ]
    if early_labels:
        for label, known in labels:
            state.learn_label(*label, known)
    rows, start, offered = [], 0, 0
    for size in batches:
        batch = txs[start : start + size]
        if not early_labels:
            while offered < len(labels) and labels[offered][1] <= batch[-1].ts_ms:
                state.learn_label(*labels[offered][0], labels[offered][1])
                offered += 1
        out = state.screen(0, batch)
        rows.append(np.column_stack([out.X, out.probability, out.anomaly, out.flagged]))
        start += size
    return np.vstack(rows)


def test_results_do_not_depend_on_batching_or_on_how_early_labels_arrive() -> None:
    reference = _run([64] * 40, early_labels=False)
    assert reference[:, -3].max() > 0  # the online classifier did learn from labels
    assert np.array_equal(_run([7, 100, 1, 64, 300, 9, 1079, 1000], early_labels=False), reference)
    assert np.array_equal(_run([2560], early_labels=True), reference)


def test_the_comparison_reports_every_difference() -> None:
    scored = pl.DataFrame(
        {
            "TRANSACTION_ID": [1, 2, 3, 4],
            "FLAGGED": [True, False, True, False],
            "score": [0.5 + 0.5 * 0.9, 0.25 * 0.2, 0.5 + 0.5 * 0.3, 0.25 * 0.1234564],
        }
    )
    same = Published(
        stage1_score={"2": 0.2, "4": 0.123456},
        flagged={"1": (None, b"", 0), "3": (None, b"", 0)},
        stage2_score={"1": 0.9, "3": 0.3},
    )
    ok = summarise(compare(scored, same))
    assert ok["identical"] and ok["rows_compared"] == 4 and ok["forwarded"] == 2
    worse = Published(
        stage1_score={"2": 0.2, "3": 0.3, "4": 0.1234},
        flagged={"1": (None, b"", 0)},
        stage2_score={"1": 0.9},
    )
    bad = summarise(compare(scored, worse))
    assert not bad["identical"]
    assert bad["forward_mismatches"] == 1 and bad["score_mismatches"] == 2
    assert bad["first_mismatches"] == ["3", "4"]
