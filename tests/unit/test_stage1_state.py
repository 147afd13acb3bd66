"""Per-partition stage-1 state: results depend on each partition's records in order, not on
batching or on how partitions interleave (what makes rebuild and replay exact)."""

from __future__ import annotations

import numpy as np

from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.rules.loader import load_rules
from streams.settings import load_settings
from streams.stage1.history import frame_transactions, screen_history
from streams.stage1.labelgate import label_of
from streams.stage1.screen import merge_batches
from streams.stage1.state import (
    MAX_TRANSACTION_BYTES,
    PartitionedScreener,
    TooLargeError,
    decode_transaction,
)
from tests.support import REPO

SETTINGS = load_settings(bootstrap_servers="127.0.0.1:1", rules_dir=REPO / "rules")


def _stream() -> list:
    df = read_handbook_frame(
        simulate(customers=150, terminals=300, days=25, seed=4, compromised_cards_per_day=1)
    )
    return frame_transactions(df.sort("ts_ms"))


def _run(txs, plan):
    """Screen ``txs`` split over two partitions (by card parity) in the batches of ``plan``."""
    state = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    parts = {
        0: [t for t in txs if int(t.card_id) % 2 == 0],
        1: [t for t in txs if int(t.card_id) % 2],
    }
    pos = {0: 0, 1: 0}
    out: dict[str, tuple] = {}
    for p, size in plan:
        batch = parts[p][pos[p] : pos[p] + size]
        pos[p] += size
        if not batch:
            continue
        res = state.screen(p, batch)
        for i, tx in enumerate(res.txs):
            out[tx.transaction_id] = (
                bool(res.flagged[i]),
                float(res.stage1_score[i]),
                float(res.anomaly[i]),
                tuple(res.fired[i]),
                tuple(res.X[i].tolist()),
            )
    assert all(pos[p] >= len(parts[p]) for p in parts)
    return out


def test_partition_results_do_not_depend_on_batches_or_interleaving():
    txs = _stream()
    n = len(txs)
    one_go = _run(txs, [(0, n), (1, n)])
    rng = np.random.default_rng(3)
    plan = [(int(rng.integers(0, 2)), int(rng.integers(1, 700))) for _ in range(200)]
    plan += [(0, n), (1, n)]
    assert _run(txs, plan) == one_go
    assert _run(txs, [(p, 1) for _ in range(400) for p in (1, 0)] + [(1, n), (0, n)]) == one_go
    assert len(one_go) == n


def test_merge_batches_concatenates_rows():
    txs = _stream()[:300]
    state = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    a, b = state.screen(0, txs[:100]), state.screen(1, txs[100:])
    merged = merge_batches([a, b])
    assert len(merged.txs) == 300 and len(merged.flagged) == 300
    assert merged.X.shape == (300, a.X.shape[1])
    assert sum(merged.hits.values()) == sum(a.hits.values()) + sum(b.hits.values())


def test_too_large_is_a_dead_letter_kind():
    big = b'{"pad": "' + b"x" * MAX_TRANSACTION_BYTES + b'"}'
    try:
        decode_transaction(big)
    except TooLargeError as exc:
        assert exc.kind == "too_large"
    else:  # pragma: no cover
        raise AssertionError("a message over the limit decoded")


def test_screen_many_equals_one_screen_per_partition_with_labels():
    """A poll screened in one call (one rules evaluation) gives the rows, scores, rules and
    label-gate effects of one ``screen`` per partition, partition after partition."""
    txs = _stream()
    parts = {p: [t for t in txs if int(t.card_id) % 3 == p] for p in range(3)}
    rules = load_rules(SETTINGS.rules_dir)
    small = SETTINGS.model_copy(update={"stage1_batch_size": 97})  # segments cut inside polls
    one, many = PartitionedScreener(small, rules), PartitionedScreener(small, rules)
    rng = np.random.default_rng(5)
    pos = dict.fromkeys(parts, 0)
    labelled, learned = 0, 0.0
    while any(pos[p] < len(parts[p]) for p in parts):
        poll = []
        for p in rng.permutation(3).tolist():
            size = int(rng.integers(0, 150))
            batch = parts[p][pos[p] : pos[p] + size]
            pos[p] += len(batch)
            if batch:
                poll.append((p, batch))
        if not poll:
            continue
        latest = max(tx.ts_ms for _, batch in poll for tx in batch)
        while labelled < len(txs) and txs[labelled].ts_ms <= latest:  # labels as they go
            tx = txs[labelled]
            for state in (one, many):
                state.learn_label(tx.transaction_id, tx.terminal_id, tx.ts_ms, labelled % 7 == 0)
            labelled += 1
        expected = merge_batches([one.screen(p, batch) for p, batch in poll])
        got = many.screen_many(poll)
        assert [t.transaction_id for t in got.txs] == [t.transaction_id for t in expected.txs]
        for name in ("X", "anomaly", "probability", "rule_score", "stage1_score", "flagged"):
            assert np.array_equal(getattr(got, name), getattr(expected, name)), name
        assert got.fired == expected.fired and got.reasons == expected.reasons
        assert got.shadow_fired == expected.shadow_fired and got.hits == expected.hits
        learned = max(learned, float(got.probability.max()))
    assert learned > 0  # the classifier did learn from the released labels


def test_a_poll_spanning_segments_decides_as_the_history_runner() -> None:
    """A backlog poll holds several segments of a partition; labels released before a later
    segment may be of rows of an earlier one, and the recall controller must know how those
    were judged (a low target makes it move the budget)."""
    delay = 7 * 86_400_000
    df = read_handbook_frame(simulate(customers=250, terminals=500, days=45, seed=11))
    df = df.sort("ts_ms")
    settings = load_settings(
        bootstrap_servers="127.0.0.1:1",
        rules_dir=REPO / "rules",
        stage1_warm_start=False,
        stage1_recall_target=0.4,  # below what it keeps of the frauds of unknown cards
    )
    expected = screen_history(df, settings)["FLAGGED"].to_numpy()
    txs = frame_transactions(df)
    labels = df["TX_FRAUD"].to_list()
    state = PartitionedScreener(settings, load_rules(REPO / "rules"))
    flags, published = [], 0
    for start in range(0, len(txs), 10_000):  # five segments of 2,000 per poll
        batch = txs[start : start + 10_000]
        last = max(tx.ts_ms for tx in batch)
        while published < len(txs) and txs[published].ts_ms + delay <= last:
            tx = txs[published]
            state.learn_label(*label_of(tx, labels[published]), known_at_ms=tx.ts_ms + delay)
            published += 1
        flags.append(state.screen(0, batch).flagged)
    assert state.parts[0].policy.controller.budget < settings.stage1_max_forward_share
    assert np.array_equal(np.concatenate(flags), expected)
