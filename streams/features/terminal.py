"""Per-terminal delayed-label windows, built from the labels stream.

Every stage-1 worker needs every terminal, so this table is fed by all partitions of the labels
topic (not the worker's own transaction partitions). A label carries the transaction's time; a
query at time t sees only labels of transactions with t − (n+7)·D < tⱼ ≤ t − 7·D, so a label that
arrives early is never used before its delay has passed. State per terminal: the labelled
transactions of the last 37 days (timestamps, prefix counts of frauds).

Besides the windowed counts and rates, the table answers "is this terminal still compromised?":
how many of its latest known labels were fraud in a row (the run), how many days that run spans,
and how many days ago (in known time, i.e. minus the delay) the latest known fraud happened. A
compromised terminal yields frauds for days or weeks; a run that keeps growing up to the latest
known label says the compromise was still going on then.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

import numpy as np

from streams.features.names import DAY_MS, LABEL_DELAY_DAYS, WINDOWS_DAYS

if TYPE_CHECKING:
    from streams.checkpoint.codec import StateReader, StateWriter

_DELAY_MS = LABEL_DELAY_DAYS * DAY_MS
_HORIZON_MS = (max(WINDOWS_DAYS) + LABEL_DELAY_DAYS) * DAY_MS
# the run features of a terminal without a known fraud: no run, none "days ago" (the horizon)
_NO_RUN = (0.0, 0.0, float(max(WINDOWS_DAYS) + LABEL_DELAY_DAYS))
_NO_LABELS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, *_NO_RUN)
# ``features`` is unrolled for these windows.
if WINDOWS_DAYS != (1, 7, 30):  # pragma: no cover - a guard for whoever changes the windows
    raise ImportError("TerminalTable.features is written for windows of 1, 7 and 30 days")
_D1_MS, _D7_MS, _D30_MS = (n * DAY_MS for n in WINDOWS_DAYS)


class TerminalLabels:
    __slots__ = ("frauds", "ts")

    def __init__(self) -> None:
        self.ts = array("q")
        self.frauds = array("l", [0])  # frauds[i] = frauds among the first i labels

    def add(self, ts_ms: int, fraud: int) -> None:
        ts = self.ts
        if not ts or ts_ms >= ts[-1]:
            ts.append(ts_ms)
            self.frauds.append(self.frauds[-1] + fraud)
            return
        pos = bisect_right(ts, ts_ms)
        ts.insert(pos, ts_ms)
        self.frauds.insert(pos + 1, self.frauds[pos] + fraud)
        for i in range(pos + 2, len(self.frauds)):
            self.frauds[i] += fraud

    def compact(self, now_ms: int) -> None:
        lo = bisect_right(self.ts, now_ms - _HORIZON_MS)
        if lo > max(16, len(self.ts) // 4):  # amortised: drop stale labels in chunks
            base = self.frauds[lo]
            del self.ts[:lo]
            self.frauds = array("l", (f - base for f in self.frauds[lo:]))


class TerminalTable:
    """All terminals' delayed label windows."""

    def __init__(self, auto_compact: bool = True) -> None:
        self.terminals: dict[str, TerminalLabels] = {}
        self.labels_seen = 0
        # compact each terminal against its own latest label; off when several partitions at
        # different event times share the table (their owner calls ``compact_all`` with the
        # earliest partition's time, so no partition loses a label it still needs)
        self.auto_compact = auto_compact

    def add_label(self, terminal: str, ts_ms: int, fraud: int) -> None:
        state = self.terminals.get(terminal)
        if state is None:
            state = self.terminals[terminal] = TerminalLabels()
        state.add(ts_ms, fraud)
        self.labels_seen += 1
        if self.auto_compact and len(state.ts) & 31 == 0:  # every 32 labels of this terminal
            state.compact(ts_ms)

    def features(self, terminal: str, ts_ms: int, out: list[float]) -> None:
        """Append, for n in (1, 7, 30): count, risk; then the 30-day fraud count, the fraud run
        (length, days spanned) and the days since the latest known fraud (``_NO_RUN``)."""
        state = self.terminals.get(terminal)
        if state is None:
            out += _NO_LABELS
            return
        ts, frauds = state.ts, state.frauds
        end = ts_ms - _DELAY_MS
        hi = bisect_right(ts, end)
        # nested windows: each search starts where the wider one ended (same positions)
        lo30 = bisect_right(ts, end - _D30_MS, 0, hi)
        lo7 = bisect_right(ts, end - _D7_MS, lo30, hi)
        lo1 = bisect_right(ts, end - _D1_MS, lo7, hi)
        top = frauds[hi]
        n1, n7, n30 = hi - lo1, hi - lo7, hi - lo30
        f1, f7, f30 = top - frauds[lo1], top - frauds[lo7], top - frauds[lo30]
        out += (
            float(n1),
            f1 / n1 if n1 else 0.0,
            float(n7),
            f7 / n7 if n7 else 0.0,
            float(n30),
            f30 / n30 if n30 else 0.0,
            float(f30),
        )
        if f30 == 0:
            out += _NO_RUN
            return
        # the run: the known labels just before ``hi`` that are all frauds, within the 30-day
        # window (older labels may or may not be compacted away yet)
        run, most = 0, hi - lo30
        while run < most and frauds[hi - run] - frauds[hi - run - 1] == 1:
            run += 1
        if run:
            span = (ts[hi - 1] - ts[hi - run]) / DAY_MS
            last = ts[hi - 1]
        else:  # the latest fraud in the window: the last index where the prefix count rises
            span = 0.0
            last_idx = bisect_right(frauds, top - 1, lo30, hi) - 1
            last = ts[last_idx]
        out += (float(run), span, (end - last) / DAY_MS)

    def save_state(self, w: StateWriter, name: str) -> None:
        states = list(self.terminals.values())
        w.strings(f"{name}.ids", list(self.terminals))
        w.numpy(f"{name}.len", np.fromiter((len(s.ts) for s in states), np.int64, len(states)))
        ts, frauds = array("q"), array("l")
        for state in states:
            ts.extend(state.ts)
            frauds.extend(state.frauds)
        w.pyarray(f"{name}.ts", ts)
        w.pyarray(f"{name}.frauds", frauds)
        w.meta[name] = self.labels_seen

    def load_state(self, r: StateReader, name: str) -> None:
        from streams.checkpoint.codec import split_pyarrays

        lengths = r.numpy(f"{name}.len")
        ids = r.strings(f"{name}.ids")
        ts = split_pyarrays(r.pyarray(f"{name}.ts"), lengths)
        frauds = split_pyarrays(r.pyarray(f"{name}.frauds"), lengths + 1)
        self.terminals = {}
        for terminal, t, f in zip(ids, ts, frauds, strict=True):
            state = self.terminals[terminal] = TerminalLabels()
            state.ts, state.frauds = t, f
        self.labels_seen = int(r.meta[name])

    def restore_older(self, other: TerminalTable, upto_ts_ms: int) -> int:
        """Take from ``other`` the labels of transactions at or before ``upto_ts_ms`` that are
        older than each terminal's oldest label here: the ones a ``compact_all`` against a later
        time dropped here (or this table never had). A partition that joins a worker whose other
        partitions are ahead needs them. Labels are only ever added, and only older ones than any
        held, so no label is counted twice; returns how many were added."""
        added = 0
        mine = self.terminals
        for terminal, theirs in other.terminals.items():
            state = mine.get(terminal)
            k = bisect_right(theirs.ts, upto_ts_ms)
            if state is not None and len(state.ts):
                k = min(k, bisect_left(theirs.ts, state.ts[0]))
            if k <= 0:
                continue
            base = theirs.frauds[0]
            frauds = array("l", (f - base for f in theirs.frauds[: k + 1]))
            ts = array("q", theirs.ts[:k])
            if state is not None:
                top, own = frauds[-1], state.frauds[0]
                frauds.extend(top + f - own for f in state.frauds[1:])
                ts.extend(state.ts)
            else:
                state = mine[terminal] = TerminalLabels()
            state.ts, state.frauds = ts, frauds
            added += k
        return added

    def compact_all(self, now_ms: int) -> None:
        for state in self.terminals.values():
            state.compact(now_ms)
