"""Stage-1 state in checkpoints (pure: no Kafka here).

A checkpoint of partition p holds two states, each a ``codec`` container:

* the **labels state** of the worker that wrote it, shared by every partition it checkpointed in
  the same round: the terminal label table, the label gate (labels read and not yet released,
  the event time released up to) and, per labels partition, the offset the labels consumer
  resumes from and the publication time of the last label read there;
* the **partition state**: card windows, anomaly model, online classifier (with its label
  cache), flag policy and recall controller, the segment position and horizon, what the
  classifier has learnt (``learned_through``) and the released labels it has not learnt yet.

``restore`` builds a private ``PartitionedScreener`` from them in which the partitions continue
exactly as in the run that wrote the checkpoint; ``streams.stage1.rebuild`` then replays the
source records after the checkpoint's offset through it, with the labels topic from the saved
offsets, and the live state adopts the partitions.
"""

from __future__ import annotations

import heapq

import numpy as np

from streams.checkpoint.codec import StateReader, StateWriter
from streams.checkpoint.position import LabelsPosition
from streams.errors import StateError
from streams.features.names import MODEL_FEATURES
from streams.stage1.labelgate import ClassifierFeed, LabelGate
from streams.stage1.state import PartitionedScreener

STAGE1_STATE = 1  # bump when a field changes meaning: older checkpoints are then not used


def _check(r: StateReader, kind: str) -> None:
    meta = r.meta
    if meta.get("kind") != kind or meta.get("stage1_state") != STAGE1_STATE:
        raise StateError(
            f"{r.where}: a {meta.get('kind')!r} state of version {meta.get('stage1_state')!r}, "
            f"want {kind!r} version {STAGE1_STATE}"
        )
    if meta.get("features") != list(MODEL_FEATURES):
        raise StateError(f"{r.where}: written for other features ({meta.get('features')})")


def _writer(kind: str) -> StateWriter:
    w = StateWriter()
    w.meta.update(kind=kind, stage1_state=STAGE1_STATE, features=list(MODEL_FEATURES))
    return w


def save_labels(state: PartitionedScreener, position: LabelsPosition) -> bytes:
    """The worker's labels state; ``position``: its labels consumer, after every label it read
    was offered to the gate."""
    return labels_writer(state, position).encode()


def save_partition(state: PartitionedScreener, partition: int, offset: int) -> bytes:
    """Partition ``partition``'s state; ``offset``: the next source offset it has not screened."""
    return partition_writer(state, partition, offset).encode()


def labels_writer(state: PartitionedScreener, position: LabelsPosition) -> StateWriter:
    """``save_labels`` before its encoding."""
    w = _writer("labels")
    state.terminals.save_state(w, "terminals")
    gate = state.gate
    held = gate.held()
    w.numpy("held.known", np.array([h[0] for h in held], dtype=np.int64))
    w.strings("held.ids", [h[2][0] for h in held])
    w.strings("held.terminals", [h[2][1] for h in held])
    w.numpy("held.ts", np.array([h[2][2] for h in held], dtype=np.int64))
    w.numpy("held.fraud", np.array([h[2][3] for h in held], dtype=np.int64))
    w.strings("held.cards", [h[2][4] for h in held])
    w.numpy("held.amounts", np.array([h[2][5] for h in held], dtype=np.float64))
    w.meta["gate"] = [gate.released_upto, gate.watermark]
    w.meta["labels"] = {
        "offsets": {str(p): o for p, o in position.offsets.items()},
        "times": {str(p): t for p, t in position.times.items()},
    }
    return w


def partition_writer(state: PartitionedScreener, partition: int, offset: int) -> StateWriter:
    """``save_partition`` before its encoding."""
    screener = state.parts[partition]
    feed = state.feeds[partition]
    w = _writer("partition")
    screener.engine.save_cards(w, "cards")
    screener.anomaly.save_state(w, "anomaly")
    screener.classifier.save_state(w, "classifier")
    screener.policy.save_state(w, "policy")
    pending = feed.pending(state.gate.released_upto)
    w.numpy("pending.known", np.array([x[0] for x in pending], dtype=np.int64))
    w.strings("pending.ids", [x[1] for x in pending])
    w.numpy("pending.fraud", np.array([x[2] for x in pending], dtype=np.int64))
    w.meta["partition"] = {
        "partition": partition,
        "offset": offset,
        "position": state.positions.get(partition, 0),
        "latest": state.latest.get(partition),
        "horizon": state.horizons.get(partition),
        "learned_through": feed.learned_through,
        "released_upto": state.gate.released_upto,
    }
    return w


def load_labels(state: PartitionedScreener, data: bytes, where: str) -> LabelsPosition:
    """Restore a (fresh) ``state``'s terminal table and gate; returns where its labels
    consumer resumes."""
    r = StateReader(data, where)
    _check(r, "labels")
    state.terminals.load_state(r, "terminals")
    gate = state.gate = LabelGate(state.gate.keep_ms)
    known = r.numpy("held.known").tolist()
    ids, terminals = r.strings("held.ids"), r.strings("held.terminals")
    ts, fraud = r.numpy("held.ts").tolist(), r.numpy("held.fraud").tolist()
    cards, amounts = r.strings("held.cards"), r.numpy("held.amounts").tolist()
    held = [
        (k, tid, (tid, term, t, f, c, a))
        for k, tid, term, t, f, c, a in zip(
            known, ids, terminals, ts, fraud, cards, amounts, strict=True
        )
    ]
    heapq.heapify(held)
    gate.restore(held, *r.meta["gate"])
    labels = r.meta["labels"]
    return LabelsPosition(
        {int(p): int(o) for p, o in labels["offsets"].items()},
        {int(p): int(t) for p, t in labels["times"].items()},
    )


def load_partition(state: PartitionedScreener, data: bytes, where: str) -> int:
    """Restore a partition into ``state`` (whose labels state came from the same round:
    ``load_labels``); returns the source offset it continues from."""
    r = StateReader(data, where)
    _check(r, "partition")
    meta = r.meta["partition"]
    partition = int(meta["partition"])
    if meta["released_upto"] != state.gate.released_upto:
        raise StateError(f"{where}: written with another labels state than the one restored")
    screener = state.reset(partition)
    screener.engine.load_cards(r, "cards")
    screener.anomaly.load_state(r, "anomaly")
    screener.classifier.load_state(r, "classifier")
    screener.policy.load_state(r, "policy")
    pending = list(
        zip(
            r.numpy("pending.known").tolist(),
            r.strings("pending.ids"),
            r.numpy("pending.fraud").tolist(),
            strict=True,
        )
    )
    state.feeds[partition] = ClassifierFeed(
        state.gate, int(meta["learned_through"]), pending, state.gate.released_upto
    )
    state.positions[partition] = int(meta["position"])
    if meta["latest"] is not None:
        state.latest[partition] = int(meta["latest"])
    if meta["horizon"] is not None:
        state.horizons[partition] = int(meta["horizon"])
    return int(meta["offset"])
