"""The stage-1 checkpointer takes one partition per snapshot, the one whose latest snapshot is
oldest, every interval / n seconds: each partition is still checkpointed once per interval, and
the worker never stalls to serialise and write every partition at once (that stall made the
stage-1 latency p99 on Apache Kafka, ``streams.stage1.checkpointing``)."""

from __future__ import annotations

from streams.checkpoint.position import LabelsPosition
from streams.checkpoint.stage1 import save_labels, save_partition
from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.rules.loader import load_rules
from streams.settings import load_settings
from streams.stage1.checkpointing import Checkpointer
from streams.stage1.history import frame_transactions
from streams.stage1.state import PartitionedScreener
from tests.support import REPO

SETTINGS = load_settings(
    bootstrap_servers="127.0.0.1:1",
    rules_dir=REPO / "rules",
    stage1_checkpoint_interval_s=4.0,
    label_cache_size=1000,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _screened(partitions: int) -> PartitionedScreener:
    df = read_handbook_frame(simulate(customers=40, terminals=50, days=3, seed=3))
    txs = frame_transactions(df.sort("ts_ms"))
    state = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    for p in range(partitions):
        state.screen(p, txs[p::partitions])
    return state


def _take(checkpointer: Checkpointer, state: PartitionedScreener, clock: Clock) -> list[int]:
    """Partitions of the snapshot taken when it is next due (written at once)."""
    while not checkpointer.due():
        clock.now += 0.25
    snap = checkpointer.snapshot(state, LabelsPosition())
    if snap is None:
        return []
    checkpointer.write(snap, lambda *a, **k: None, owned=state.parts)
    return sorted(snap.parts)


def test_one_partition_per_snapshot_oldest_first_each_once_per_interval() -> None:
    state = _screened(4)
    clock = Clock()
    checkpointer = Checkpointer(SETTINGS, clock)
    for p in range(4):
        checkpointer.recovered(p, 0, -1, None)
        checkpointer.offsets[p] = 10 + p  # every partition has advanced
    times, taken = [], []
    for _ in range(4):
        taken += _take(checkpointer, state, clock)
        times.append(clock.now)
    assert taken == [0, 1, 2, 3]
    assert times == [4.0, 5.0, 6.0, 7.0]  # interval / 4 apart: each once per interval
    assert _take(checkpointer, state, clock) == []  # nothing advanced since
    checkpointer.offsets[2] += 5
    checkpointer.offsets[0] += 5
    assert _take(checkpointer, state, clock) == [0]  # of the two moved, 0's snapshot is older
    assert _take(checkpointer, state, clock) == [2]


def test_a_partition_taken_over_later_is_not_starved() -> None:
    state = _screened(3)
    clock = Clock()
    checkpointer = Checkpointer(SETTINGS, clock)
    for p in (0, 1):
        checkpointer.recovered(p, 0, -1, None)
        checkpointer.offsets[p] = 10
    assert _take(checkpointer, state, clock) == [0]
    checkpointer.recovered(2, 0, -1, None)  # joins: never snapshot, so before 0
    checkpointer.offsets[2] = 10
    checkpointer.offsets[0] += 1
    assert _take(checkpointer, state, clock) == [1]
    assert _take(checkpointer, state, clock) == [2]
    assert _take(checkpointer, state, clock) == [0]


def test_a_snapshot_is_the_state_when_taken_though_compressed_later() -> None:
    """The worker's thread only copies the state out; zstd compresses it on the checkpointer's
    thread while screening goes on. The bytes are those of the state at the snapshot, not of
    what the partition became while they were compressed."""
    df = read_handbook_frame(simulate(customers=40, terminals=50, days=6, seed=5))
    txs = frame_transactions(df.sort("ts_ms"))
    half = len(txs) // 2
    state = PartitionedScreener(SETTINGS, load_rules(SETTINGS.rules_dir))
    state.screen(0, txs[:half])
    position = LabelsPosition({0: 7}, {0: 123})
    expected = (save_labels(state, position), save_partition(state, 0, half))
    clock = Clock()
    checkpointer = Checkpointer(SETTINGS, clock)
    checkpointer.recovered(0, 0, -1, None)
    checkpointer.offsets[0] = half
    clock.now = 10.0
    snap = checkpointer.snapshot(state, position)
    assert snap is not None and snap.offsets == {0: half}  # known before the bytes are
    state.screen(0, txs[half:])  # the partition moves on while its snapshot compresses
    assert save_partition(state, 0, half) != expected[1]
    assert (snap.labels, snap.parts[0][1]) == expected
    checkpointer.close()
