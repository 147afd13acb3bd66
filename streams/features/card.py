"""Per-card event-time windows.

State per card: the timestamps (ms), prefix sums of amounts and terminal ids of the card's
transactions in the last 30 days (plus at most ``_SLACK`` stale entries awaiting compaction).
A card making k transactions a day holds about 30·k entries: 8 + 8 bytes in two ``array``s plus
an 8-byte reference to a shared terminal id each (``FeatureEngine`` interns terminal ids), so
about 16 + 24·30·k bytes of payload.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

from streams.features.names import DAY_MS, WINDOWS_DAYS

_HORIZON_MS = max(WINDOWS_DAYS) * DAY_MS
_HORIZON_S = _HORIZON_MS / 1000.0
_HOUR_MS = 3_600_000
_SLACK = 64
# ``features`` is unrolled for these windows (a loop over them costs a tenth of its time).
if WINDOWS_DAYS != (1, 7, 30):  # pragma: no cover - a guard for whoever changes the windows
    raise ImportError("CardWindows.features is written for windows of 1, 7 and 30 days")
_D1_MS, _D7_MS, _D30_MS = (n * DAY_MS for n in WINDOWS_DAYS)


class CardWindows:
    """The transactions of one card over the longest window, with prefix sums of amounts."""

    __slots__ = ("cum", "terms", "ts")

    def __init__(self) -> None:
        self.ts = array("q")
        self.cum = array("d", [0.0])  # cum[i] = sum of the first i amounts
        self.terms: list[str] = []

    def add(self, ts_ms: int, amount: float, terminal: str) -> int:
        """Record a transaction; returns its index. Out-of-order events are inserted in place."""
        ts = self.ts
        if not ts or ts_ms >= ts[-1]:
            ts.append(ts_ms)
            self.cum.append(self.cum[-1] + amount)
            self.terms.append(terminal)
            return len(ts) - 1
        pos = bisect_right(ts, ts_ms)
        ts.insert(pos, ts_ms)
        self.terms.insert(pos, terminal)
        amounts = [self.cum[i + 1] - self.cum[i] for i in range(len(self.cum) - 1)]
        amounts.insert(pos, amount)
        cum = array("d", [0.0])
        for a in amounts:
            cum.append(cum[-1] + a)
        self.cum = cum
        return pos

    def compact(self, now_ms: int) -> None:
        """Drop entries that no window ending at or after ``now_ms`` can see."""
        lo = bisect_right(self.ts, now_ms - _HORIZON_MS)
        if lo > _SLACK:
            base = self.cum[lo]
            del self.ts[:lo]
            del self.terms[:lo]
            self.cum = array("d", (c - base for c in self.cum[lo:]))

    def features(
        self, idx: int, ts_ms: int, amount: float, terminal: str, out: list[float]
    ) -> None:
        """Append the card features of the transaction at ``idx`` to ``out``.

        Order: for n in (1, 7, 30): count, mean amount; then amount ratio to the previous 30 days'
        mean, seconds since the previous transaction, count in the last hour, new terminal.
        The windows nest (30 days ⊇ 7 ⊇ 1 ⊇ 1 hour), so each search starts where the wider one
        ended: the same positions as searching from 0, with fewer probes.
        """
        ts, cum = self.ts, self.cum
        hi = idx + 1
        lo30 = bisect_right(ts, ts_ms - _D30_MS, 0, hi)
        lo7 = bisect_right(ts, ts_ms - _D7_MS, lo30, hi)
        lo1 = bisect_right(ts, ts_ms - _D1_MS, lo7, hi)
        top = cum[hi]
        n1, n7, n30 = hi - lo1, hi - lo7, hi - lo30
        prev = idx - lo30
        out += (
            float(n1),
            (top - cum[lo1]) / n1,
            float(n7),
            (top - cum[lo7]) / n7,
            float(n30),
            (top - cum[lo30]) / n30,
            amount / ((cum[idx] - cum[lo30]) / prev) if prev and cum[idx] > cum[lo30] else 1.0,
            (ts_ms - ts[idx - 1]) / 1000.0 if idx > lo30 else _HORIZON_S,
            float(hi - bisect_right(ts, ts_ms - _HOUR_MS, lo1, hi)),
            0.0 if terminal in self.terms[lo30:idx] else 1.0,
        )
