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

And it asks who the latest known fraud points at, the terminal or the card: its amount (a large
amount is a fraud of the amount, wherever it is paid) and how many known frauds its card had in
the 30 days before it (a card with earlier frauds elsewhere was itself compromised, and its fraud
here says little about the terminal). Both come from the label (``card_id``, ``amount``), so
every worker computes them alike; the card's count is taken when a transaction asks, over frauds
older than the terminal's, all of them known by then, so it does not depend on the order in which
labels arrive. A label without them gives an amount of 0 and a count of -1.
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
_NO_RUN = (0.0, 0.0, float(max(WINDOWS_DAYS) + LABEL_DELAY_DAYS), 0.0, -1.0)
_NO_LABELS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, *_NO_RUN)
# ``features`` is unrolled for these windows.
if WINDOWS_DAYS != (1, 7, 30):  # pragma: no cover - a guard for whoever changes the windows
    raise ImportError("TerminalTable.features is written for windows of 1, 7 and 30 days")
_D1_MS, _D7_MS, _D30_MS = (n * DAY_MS for n in WINDOWS_DAYS)
# a card's frauds are asked about back to 30 days before a terminal's oldest usable fraud
_CARD_HORIZON_MS = _HORIZON_MS + _D30_MS


class TerminalLabels:
    __slots__ = ("fraud_amount", "fraud_card", "fraud_ts", "frauds", "ts")

    def __init__(self) -> None:
        self.ts = array("q")
        self.frauds = array("l", [0])  # frauds[i] = frauds among the first i labels
        # the fraud labels alone, in time order: time, amount, card ("" when the label has none)
        self.fraud_ts = array("q")
        self.fraud_amount = array("d")
        self.fraud_card: list[str] = []

    def add(self, ts_ms: int, fraud: int, card: str = "", amount: float = 0.0) -> None:
        """One label; a fraud's time, card and amount go to the fraud entries too."""
        if fraud:
            pos = bisect_right(self.fraud_ts, ts_ms)
            self.fraud_ts.insert(pos, ts_ms)
            self.fraud_amount.insert(pos, amount)
            self.fraud_card.insert(pos, card)
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
            k = bisect_right(self.fraud_ts, now_ms - _HORIZON_MS)
            if k:
                del self.fraud_ts[:k], self.fraud_amount[:k], self.fraud_card[:k]


class TerminalTable:
    """All terminals' delayed label windows."""

    def __init__(self, auto_compact: bool = True) -> None:
        self.terminals: dict[str, TerminalLabels] = {}
        self.cards: dict[str, array[int]] = {}  # per card: its fraud labels' times, in order
        self.labels_seen = 0
        # compact each terminal against its own latest label; off when several partitions at
        # different event times share the table (their owner calls ``compact_all`` with the
        # earliest partition's time, so no partition loses a label it still needs)
        self.auto_compact = auto_compact

    def add_label(
        self, terminal: str, ts_ms: int, fraud: int, card: str = "", amount: float = 0.0
    ) -> None:
        state = self.terminals.get(terminal)
        if state is None:
            state = self.terminals[terminal] = TerminalLabels()
        state.add(ts_ms, fraud, card, amount)
        if fraud and card:
            self._add_card_fraud(card, ts_ms)
        self.labels_seen += 1
        if self.auto_compact and len(state.ts) & 31 == 0:  # every 32 labels of this terminal
            state.compact(ts_ms)

    def _add_card_fraud(self, card: str, ts_ms: int) -> None:
        times = self.cards.get(card)
        if times is None:
            times = self.cards[card] = array("q")
        times.insert(bisect_right(times, ts_ms), ts_ms)
        if self.auto_compact and len(times) & 15 == 0:
            del times[: bisect_right(times, ts_ms - _CARD_HORIZON_MS)]

    def _card_frauds_before(self, card: str, ts_ms: int) -> float:
        """Known frauds of ``card`` in the 30 days before ``ts_ms`` (-1 without a card)."""
        if not card:
            return -1.0
        times = self.cards.get(card)
        if times is None:
            return 0.0
        return float(bisect_left(times, ts_ms) - bisect_left(times, ts_ms - _D30_MS))

    def features(self, terminal: str, ts_ms: int, out: list[float]) -> None:
        """Append, for n in (1, 7, 30): count, risk; then the 30-day fraud count, the fraud run
        (length, days spanned), the days since the latest known fraud, its amount and its card's
        known frauds in the 30 days before it (``_NO_RUN`` without a known fraud)."""
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
        j = bisect_right(state.fraud_ts, end) - 1  # the latest known fraud (f30 > 0: one is)
        out += (
            float(run),
            span,
            (end - last) / DAY_MS,
            state.fraud_amount[j],
            self._card_frauds_before(state.fraud_card[j], state.fraud_ts[j]),
        )

    def save_state(self, w: StateWriter, name: str) -> None:
        states = list(self.terminals.values())
        w.strings(f"{name}.ids", list(self.terminals))
        w.numpy(f"{name}.len", np.fromiter((len(s.ts) for s in states), np.int64, len(states)))
        ts, frauds = array("q"), array("l")
        fraud_ts, fraud_amount, fraud_card = array("q"), array("d"), []
        for state in states:
            ts.extend(state.ts)
            frauds.extend(state.frauds)
            fraud_ts.extend(state.fraud_ts)
            fraud_amount.extend(state.fraud_amount)
            fraud_card.extend(state.fraud_card)
        w.pyarray(f"{name}.ts", ts)
        w.pyarray(f"{name}.frauds", frauds)
        w.numpy(
            f"{name}.flen", np.fromiter((len(s.fraud_ts) for s in states), np.int64, len(states))
        )
        w.pyarray(f"{name}.fts", fraud_ts)
        w.pyarray(f"{name}.famount", fraud_amount)
        w.strings(f"{name}.fcard", fraud_card)
        cards = list(self.cards.values())
        w.strings(f"{name}.cards", list(self.cards))
        w.numpy(f"{name}.clen", np.fromiter((len(c) for c in cards), np.int64, len(cards)))
        card_ts = array("q")
        for times in cards:
            card_ts.extend(times)
        w.pyarray(f"{name}.cts", card_ts)
        w.meta[name] = self.labels_seen

    def load_state(self, r: StateReader, name: str) -> None:
        from streams.checkpoint.codec import split_pyarrays

        lengths = r.numpy(f"{name}.len")
        ids = r.strings(f"{name}.ids")
        ts = split_pyarrays(r.pyarray(f"{name}.ts"), lengths)
        frauds = split_pyarrays(r.pyarray(f"{name}.frauds"), lengths + 1)
        flen = r.numpy(f"{name}.flen")
        fraud_ts = split_pyarrays(r.pyarray(f"{name}.fts"), flen)
        fraud_amount = split_pyarrays(r.pyarray(f"{name}.famount"), flen)
        fraud_card = r.strings(f"{name}.fcard")
        self.terminals = {}
        at = 0
        for terminal, t, f, ft, fa in zip(ids, ts, frauds, fraud_ts, fraud_amount, strict=True):
            state = self.terminals[terminal] = TerminalLabels()
            state.ts, state.frauds = t, f
            state.fraud_ts, state.fraud_amount = ft, fa
            state.fraud_card = fraud_card[at : at + len(ft)]
            at += len(ft)
        card_ts = split_pyarrays(r.pyarray(f"{name}.cts"), r.numpy(f"{name}.clen"))
        self.cards = dict(zip(r.strings(f"{name}.cards"), card_ts, strict=True))
        self.labels_seen = int(r.meta[name])

    def restore_older(self, other: TerminalTable, upto_ts_ms: int) -> int:
        """Take from ``other`` the labels of transactions at or before ``upto_ts_ms`` that are
        older than each terminal's oldest label here: the ones a ``compact_all`` against a later
        time dropped here (or this table never had). A partition that joins a worker whose other
        partitions are ahead needs them. Labels are only ever added, and only older ones than any
        held, so no label is counted twice; returns how many were added. The cards' fraud times
        are taken the same way, per card."""
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
            # their fraud entries of those labels: the ones before the first label kept here
            kf = bisect_left(theirs.fraud_ts, ts[-1] + 1)
            fraud_ts = array("q", theirs.fraud_ts[:kf])
            fraud_amount = array("d", theirs.fraud_amount[:kf])
            fraud_card = theirs.fraud_card[:kf]
            if state is not None:
                top, own = frauds[-1], state.frauds[0]
                frauds.extend(top + f - own for f in state.frauds[1:])
                ts.extend(state.ts)
                fraud_ts.extend(state.fraud_ts)
                fraud_amount.extend(state.fraud_amount)
                fraud_card.extend(state.fraud_card)
            else:
                state = mine[terminal] = TerminalLabels()
            state.ts, state.frauds = ts, frauds
            state.fraud_ts, state.fraud_amount, state.fraud_card = (
                fraud_ts,
                fraud_amount,
                fraud_card,
            )
            added += k
        for card, times in other.cards.items():
            own_times = self.cards.get(card)
            k = bisect_right(times, upto_ts_ms)
            if own_times is not None and len(own_times):
                k = min(k, bisect_left(times, own_times[0]))
            if k <= 0:
                continue
            merged = array("q", times[:k])
            if own_times is not None:
                merged.extend(own_times)
            self.cards[card] = merged
        return added

    def compact_all(self, now_ms: int) -> None:
        for state in self.terminals.values():
            state.compact(now_ms)
        horizon = now_ms - _CARD_HORIZON_MS
        stale = []
        for card, times in self.cards.items():
            if times[0] <= horizon:
                del times[: bisect_right(times, horizon)]
                if not times:
                    stale.append(card)
        for card in stale:
            del self.cards[card]
