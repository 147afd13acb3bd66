"""Stage-1 checkpoints: a partition restored from a checkpoint continues exactly as the run that
wrote it (same features, scores and verdicts), with labels flowing; unreadable checkpoints are
refused with a ``StateError``."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from streams.checkpoint.codec import StateReader, StateWriter
from streams.checkpoint.position import LabelsPosition
from streams.checkpoint.stage1 import (
    load_labels,
    load_partition,
    save_labels,
    save_partition,
)
from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.errors import StateError
from streams.features.names import DAY_MS, LABEL_DELAY_DAYS
from streams.rules.loader import load_rules
from streams.settings import load_settings
from streams.stage1.history import frame_transactions
from streams.stage1.labelgate import label_of
from streams.stage1.state import PartitionedScreener
from tests.support import REPO

SETTINGS = load_settings(
    bootstrap_servers="127.0.0.1:1", rules_dir=REPO / "rules", label_cache_size=20_000
)
DELAY = LABEL_DELAY_DAYS * DAY_MS


def _history(days: int = 40):
    df = read_handbook_frame(
        simulate(customers=200, terminals=300, days=days, seed=5, compromised_cards_per_day=1)
    ).sort("ts_ms")
    txs = frame_transactions(df)
    frauds = df["TX_FRAUD"].to_list()
    labels = sorted((tx.ts_ms + DELAY, *label_of(tx, f)) for tx, f in zip(txs, frauds, strict=True))
    parts = {p: [t for t in txs if int(t.card_id) % 2 == p] for p in (0, 1)}
    return parts, labels


class Run:
    """A worker's state fed batches of two partitions and the labels a day ahead of them."""

    def __init__(self, parts, labels, state=None, next_label=0):
        self.parts, self.labels = parts, labels
        self.state = state or PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
        self.next_label = next_label
        self.out: dict[str, tuple] = {}

    def step(self, p: int, start: int, size: int) -> None:
        batch = self.parts[p][start : start + size]
        if not batch:
            return
        ahead = max(tx.ts_ms for tx in batch) + DAY_MS  # read ahead: the gate holds some
        while self.next_label < len(self.labels) and self.labels[self.next_label][0] <= ahead:
            known, *label = self.labels[self.next_label]
            self.state.learn_label(*label, known_at_ms=known)
            self.next_label += 1
        res = self.state.screen(p, batch)
        for i, tx in enumerate(res.txs):
            self.out[tx.transaction_id] = (
                bool(res.flagged[i]),
                float(res.stage1_score[i]),
                float(res.anomaly[i]),
                float(res.probability[i]),
                tuple(res.fired[i]),
                tuple(res.X[i].tolist()),
            )


def _plan(parts, seed):
    rng = np.random.default_rng(seed)
    pos = {0: 0, 1: 0}
    plan = []
    while any(pos[p] < len(parts[p]) for p in pos):
        p = int(rng.integers(0, 2))
        size = int(rng.integers(50, 1500))
        plan.append((p, pos[p], size))
        pos[p] += size
    return plan


def _whole(parts, labels, plan) -> Run:
    """The uninterrupted run: the reference every restore is held to."""
    whole = Run(parts, labels)
    for step in plan:
        whole.step(*step)
    return whole


def _end(plan, partition: int) -> int:
    """The next offset of ``partition`` after the steps of ``plan``."""
    return max((s + n for q, s, n in plan if q == partition), default=0)


def test_restored_partitions_continue_exactly():
    parts, labels = _history()
    plan = _plan(parts, 7)
    whole = _whole(parts, labels, plan)

    cut = len(plan) // 2
    first = Run(parts, labels)
    for step in plan[:cut]:
        first.step(*step)
    offsets = {p: _end(plan[:cut], p) for p in (0, 1)}
    labels_blob = save_labels(first.state, LabelsPosition({0: first.next_label}, {}))
    blobs = {p: save_partition(first.state, p, offsets[p]) for p in (0, 1)}

    restored = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    position = load_labels(restored, labels_blob, "labels")
    assert {p: load_partition(restored, blobs[p], f"p{p}") for p in (0, 1)} == offsets
    assert restored.gate.held() and restored.terminals.terminals  # the test covers both
    second = Run(parts, labels, restored, position.offsets[0])
    for step in plan[cut:]:
        second.step(*step)

    continued = {**first.out, **second.out}
    assert len(continued) == len(whole.out) == sum(len(v) for v in parts.values())
    differing = [t for t in whole.out if whole.out[t] != continued[t]]
    assert not differing, f"{len(differing)} transactions differ after the restore"
    assert sum(f for f, *_ in whole.out.values()) > 0


def test_codec_round_trips_and_refuses_garbage():
    w = StateWriter()
    w.meta["x"] = [1, 2.5]
    w.numpy("a", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.strings("s", ["é", "", "card-1"])
    w.strings("ascii", ["", "t-1", "card-22"])  # the one-encode path of all-ASCII ids
    r = StateReader(w.encode())
    assert r.meta["x"] == [1, 2.5] and r.strings("s") == ["é", "", "card-1"]
    assert r.strings("ascii") == ["", "t-1", "card-22"]
    assert r.numpy("a").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert set(r.versions) >= {"fraudstream", "numpy", "river", "python"}
    with pytest.raises(StateError, match="not a checkpoint"):
        StateReader(b"garbage")
    with pytest.raises(StateError, match="magic"):
        StateReader(zstandard.ZstdCompressor().compress(b"NOPE" + bytes(10)))
    with pytest.raises(StateError, match="no field"):
        r.numpy("missing")
    with pytest.raises(StateError, match="another labels state"):
        parts, labels = _history()
        run = Run(parts, labels)
        run.step(0, 0, 500)
        run.step(1, 0, 500)
        blob = save_partition(run.state, 0, 500)
        other = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
        load_partition(other, blob, "p0")


def test_partitions_from_two_rounds_join_one_worker_exactly():
    """A worker that owns nothing restores partition 0 from an early checkpoint (it takes over
    that round's labels state) and partition 1 from a later one (adopted beside it, its labels
    state ahead of the worker's): both continue exactly as in the run that wrote them."""
    parts, labels = _history()
    plan = _plan(parts, 11)
    whole = _whole(parts, labels, plan)

    early, late = len(plan) // 3, 2 * len(plan) // 3
    writer = Run(parts, labels)
    blobs = {}
    for i, step in enumerate(plan[:late]):
        writer.step(*step)
        if i == early - 1:
            at = {p: _end(plan[:early], p) for p in (0, 1)}
            position = LabelsPosition({0: writer.next_label}, {})
            blobs[0] = (save_labels(writer.state, position), save_partition(writer.state, 0, at[0]))
    at1 = _end(plan[:late], 1)
    blobs[1] = (
        save_labels(writer.state, LabelsPosition({0: writer.next_label}, {})),
        save_partition(writer.state, 1, at1),
    )

    live = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    first = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    resume = load_labels(first, blobs[0][0], "round A")
    offset0 = load_partition(first, blobs[0][1], "p0")
    live.take_labels(first)
    live.adopt(0, first)
    second = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    load_labels(second, blobs[1][0], "round B")
    offset1 = load_partition(second, blobs[1][1], "p1")
    assert second.gate.released_upto > live.gate.released_upto  # the adopted one is ahead
    live.adopt(1, second)

    restored = Run(parts, labels, live, resume.offsets[0])
    done = {0: offset0, 1: offset1}
    for p, start, size in plan:
        if start + size <= done[p]:
            continue
        begin = max(start, done[p])
        restored.step(p, begin, start + size - begin)
    differing = [t for t in restored.out if restored.out[t] != whole.out[t]]
    assert restored.out and not differing, f"{len(differing)} of {len(restored.out)} differ"


@pytest.mark.parametrize("compacted", [False, True])
def test_a_partition_behind_the_worker_joins_once_its_labels_caught_up(compacted):
    """Partition 0's checkpoint is at its committed offset (nothing to replay) but older than
    the labels state of the worker taking it over (partition 1's, further on). Adopted as it is,
    its classifier would skip the labels released in between: ``adopt`` refuses that. Once its
    private gate has released the labels up to the worker's (``rebuild._catch_up``), it
    continues exactly as in the run that wrote it. ``compacted``: the worker's terminal table
    was compacted against its own partition's time (as ``screen_many`` does every 50,000
    labels), which drops labels the joining partition's windows still need; ``adopt`` takes
    them back from the state it was restored in."""
    parts, labels = _history(60 if compacted else 40)
    plan = _plan(parts, 13)
    whole = _whole(parts, labels, plan)

    early, late = len(plan) // 3, 2 * len(plan) // 3
    writer = Run(parts, labels)
    for step in plan[:early]:
        writer.step(*step)
    offset0 = _end(plan[:early], 0)
    blob0 = (
        save_labels(writer.state, LabelsPosition({0: writer.next_label}, {})),
        save_partition(writer.state, 0, offset0),
    )
    p1_steps = [(q, s, n) for q, s, n in plan[early:late] if q == 1]
    for step in p1_steps:  # partition 0 does not move: its checkpoint stays at its offset
        writer.step(*step)
    offset1 = _end(plan[:late], 1)
    position1 = LabelsPosition({0: writer.next_label}, {})
    blob1 = (save_labels(writer.state, position1), save_partition(writer.state, 1, offset1))

    live = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    ahead = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    load_labels(ahead, blob1[0], "round B")
    assert load_partition(ahead, blob1[1], "p1") == offset1
    live.take_labels(ahead)
    live.adopt(1, ahead)
    if compacted:
        before = sum(len(t.ts) for t in live.terminals.terminals.values())
        live.terminals.compact_all(live.latest[1])
        assert sum(len(t.ts) for t in live.terminals.terminals.values()) < before

    behind = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    resume0 = load_labels(behind, blob0[0], "round A")
    assert load_partition(behind, blob0[1], "p0") == offset0
    assert behind.gate.released_upto < live.gate.released_upto
    with pytest.raises(RuntimeError, match="behind this worker"):
        live.adopt(0, behind)
    upto = live.gate.released_upto
    for known, *label in labels[resume0.offsets[0] :]:
        if known > upto + DAY_MS:
            break
        behind.learn_label(*label, known_at_ms=known)
    for _ in behind.gate.for_terminals(upto):
        pass
    live.adopt(0, behind)

    # partition 0's records from offset0 on are new to this worker; so are partition 1's
    # after offset1 (the records of partition 0 the writer never screened come now, in order)
    restored = Run(parts, labels, live, position1.offsets[0])
    p0_rest = [(0, offset0, len(parts[0]) - offset0)]
    p1_rest = [(1, offset1, len(parts[1]) - offset1)]
    for p, start, size in p0_rest + p1_rest:
        for begin in range(start, start + size, 700):
            restored.step(p, begin, min(700, start + size - begin))
    differing = [t for t in restored.out if restored.out[t] != whole.out[t]]
    assert restored.out and not differing, f"{len(differing)} of {len(restored.out)} differ"


def test_a_checkpoint_is_found_only_by_its_group_and_only_complete():
    from streams.checkpoint.topic import CHUNK_BYTES, assemble, records

    state = bytes(range(256)) * (CHUNK_BYTES // 100)  # three chunks
    latest: dict[bytes, bytes] = {}
    for key, value in records("shadow", 0, 4, 900, "r1", b"L", b"other group's"):
        latest[key] = value
    assert assemble("stage1", 0, latest) == (None, -1)
    for key, value in records("stage1", 0, 7, 1234, "r2", b"labels", state):
        latest[key] = value
    found, manifest_id = assemble("stage1", 0, latest)
    assert manifest_id == 7 and found is not None
    assert (found.offset, found.labels, found.state, found.round) == (1234, b"labels", state, "r2")
    assert assemble("shadow", 0, latest)[0].state == b"other group's"
    # a newer checkpoint whose writer died before its manifest leaves this one whole (other slot)
    for key, value in records("stage1", 0, 8, 2000, "r3", b"x", state)[:-2]:
        latest[key] = value
    assert assemble("stage1", 0, latest)[0].offset == 1234
    # a chunk of the manifest's checkpoint replaced by another id: not complete
    latest[b"stage1/0/1/0"] = (99).to_bytes(8, "big") + b"junk"
    assert assemble("stage1", 0, latest) == (None, 7)
