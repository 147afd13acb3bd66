"""The event-time label gate: labels reach the terminal table and the online classifier when the
stream's event time allows, whatever their arrival order and however the stream is batched."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from streams.evaluation.through_kafka import Published, compare, summarise
from streams.rules.loader import load_rules
from streams.schema import Transaction
from streams.settings import Settings
from streams.stage1.labelgate import ClassifierFeed, LabelGate, label_of, segments
from streams.stage1.state import PartitionedScreener
from tests.support import REPO

DAY = 86_400_000


def test_labels_wait_for_their_time_in_publication_order() -> None:
    gate = LabelGate()
    gate.offer(("b", "t1", 20, 1), 20 + 7 * DAY)
    gate.offer(("c", "t2", 10, 1), 10 + 7 * DAY)
    gate.offer(("a", "t1", 10, 0), 10 + 7 * DAY)  # same time as "c": transaction id order
    assert gate.watermark == 20 + 7 * DAY and len(gate) == 3
    assert list(gate.for_terminals(7 * DAY)) == []
    assert [lab[0] for lab in gate.for_terminals(10 + 7 * DAY)] == ["a", "c"]
    # the classifier only gets what the terminal table already has, up to its own horizon
    assert [x[1] for _, x in gate.released_since(0, 10 + 7 * DAY - 1)] == []
    assert [x[1] for _, x in gate.released_since(0, 30 * DAY)] == ["a", "c"]
    assert [lab[0] for lab in gate.for_terminals(30 * DAY)] == ["b"]
    assert [x[1] for _, x in gate.released_since(2, 30 * DAY)] == ["b"] and len(gate) == 0
    gate.offer(("d", "t3", 5, 1), 5 + 7 * DAY)  # its time was released already: late
    assert gate.late == 1


class _Learner:
    def __init__(self, known: set[str]):
        self.known = known
        self.learnt: list[str] = []

    def learn_label_if_cached(self, tid: str, fraud: bool, known_ms: int | None = None) -> bool:
        if tid in self.known:
            self.learnt.append(tid)
            return True
        return False


def test_a_feed_learns_its_own_labels_once_and_continues_after_a_rebuild() -> None:
    gate = LabelGate()
    for i in range(6):
        gate.offer((f"t{i}", "x", i * DAY, 0), (i + 7) * DAY)
    list(gate.for_terminals(20 * DAY))
    mine = _Learner({"t0", "t2", "t4", "t5"})
    feed = ClassifierFeed(gate)
    feed.learn(mine, 9 * DAY)  # labels t0..t2 are published by then
    feed.learn(mine, 9 * DAY)
    assert mine.learnt == ["t0", "t2"]
    # a partition rebuilt elsewhere up to day 10 joins: it learns only what came after
    other = _Learner({"t2", "t3", "t4"})
    late = ClassifierFeed(gate, learned_through=10 * DAY)
    late.learn(other, 20 * DAY)
    assert other.learnt == ["t4"]
    gate.trim([feed.cursor, late.cursor])  # nothing older than keep_ms: nothing forgotten
    feed.learn(mine, 20 * DAY)
    assert mine.learnt == ["t0", "t2", "t4", "t5"]


def test_trim_forgets_only_what_every_cursor_passed_and_keeps_indices_absolute() -> None:
    gate = LabelGate(keep_ms=2 * DAY)
    for i in range(10):
        gate.offer((f"t{i}", "x", i * DAY, i % 2), (i + 7) * DAY)
    list(gate.for_terminals(16 * DAY))  # all ten released; released_upto is day 16
    fast, slow = ClassifierFeed(gate), ClassifierFeed(gate)
    fast.learn(_Learner(set()), 16 * DAY)
    slow.learn(_Learner(set()), 10 * DAY)  # passed t0..t3 (published days 7..10)
    assert (fast.cursor, slow.cursor) == (10, 4)
    gate.trim([fast.cursor, slow.cursor])  # older than day 14 and passed by both: t0..t3
    assert gate.end == 10
    assert [i for i, _ in gate.released_since(0, 30 * DAY)] == list(range(4, 10))
    assert [x[1] for _, x in gate.released_since(slow.cursor, 12 * DAY)] == ["t4", "t5"]
    assert gate.first_after(11 * DAY) == 5
    gate.trim([fast.cursor])  # the slow cursor left: up to the horizon only (t4..t6)
    assert [x[1] for _, x in gate.released_since(0, 30 * DAY)] == ["t7", "t8", "t9"]
    assert gate.first_after(0) == 7


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
    labels = [(label_of(tx, f), tx.ts_ms + 7 * DAY) for tx, f in zip(txs, frauds, strict=True)]
    if early_labels:
        for label, known in labels:
            state.learn_label(*label, known_at_ms=known)
    rows, start, offered = [], 0, 0
    for size in batches:
        batch = txs[start : start + size]
        if not early_labels:
            while offered < len(labels) and labels[offered][1] <= batch[-1].ts_ms:
                state.learn_label(*labels[offered][0], known_at_ms=labels[offered][1])
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


def _partitioned(
    settings: Settings, owned: list[list[int]], txs: list[Transaction], frauds: list[int]
) -> dict[str, tuple[float, float]]:
    """Screen a two-partition stream (cards split by parity) with the partitions spread over
    workers as ``owned`` says, each worker reading all labels; (probability, anomaly) by id."""
    parts = {0: [t for t in txs if int(t.card_id[1:]) % 2 == 0]}
    parts[1] = [t for t in txs if int(t.card_id[1:]) % 2 == 1]
    out: dict[str, tuple[float, float]] = {}
    for partitions in owned:
        state = PartitionedScreener(settings, load_rules(settings.rules_dir))
        offered = 0
        for start in range(0, len(txs), 50):
            chunk = txs[start : start + 50]
            while offered < len(txs) and txs[offered].ts_ms + 7 * DAY <= chunk[-1].ts_ms:
                tx = txs[offered]
                state.learn_label(*label_of(tx, frauds[offered]))
                offered += 1
            ids = {t.transaction_id for t in chunk}
            groups = [(p, [t for t in parts[p] if t.transaction_id in ids]) for p in partitions]
            screened = state.screen_many([(p, g) for p, g in groups if g])
            for i, tx in enumerate(screened.txs):
                out[tx.transaction_id] = (
                    float(screened.probability[i]),
                    float(screened.anomaly[i]),
                )
    return out


def test_scores_do_not_depend_on_which_partitions_a_worker_owns() -> None:
    settings = Settings(stage1_batch_size=64, rules_dir=REPO / "rules")
    txs, frauds = _stream(3000, seed=3)
    together = _partitioned(settings, [[0, 1]], txs, frauds)
    apart = _partitioned(settings, [[0], [1]], txs, frauds)
    assert max(p for p, _ in together.values()) > 0  # the classifiers learnt
    assert together == apart


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
