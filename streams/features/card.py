"""Per-card event-time windows.

State per card: the timestamps (ms), prefix sums of amounts, the amounts (float32), each
transaction's amount against the card's median at its time (float32), prefix counts of those
ratios above each of ``RATIO_STEPS`` and terminal keys of the card's transactions in the last 30
days (plus at most ``_SLACK`` stale entries awaiting compaction). A card making k transactions a
day holds about 30·k entries: 8 + 8 + 4 + 4 + 12 bytes in five ``array``s plus a 4-byte
terminal key (``terminal_key``: ``FeatureEngine`` numbers its terminal ids) in a ``bytearray``,
so about 36 + 40·30·k bytes of payload.

The card's habit is the median of its previous 30 days' amounts: unlike the mean, a few
fraudulent amounts (a compromised card paying several times its usual sums) do not move it, so
the later frauds of the same compromise still stand out against it.

Terminal keys are fixed-width and only their first byte has the high bit set, so a key can only
be found in the ``bytearray`` at an entry's start: "has the card used this terminal in the
window" is one ``bytearray.find`` (C) over the window's bytes, not a Python-level comparison of
each id.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from math import exp, log

from streams.features.names import DAY_MS, WINDOWS_DAYS

_HORIZON_MS = max(WINDOWS_DAYS) * DAY_MS
_HORIZON_S = _HORIZON_MS / 1000.0
_HOUR_MS = 3_600_000
_SLACK = 64
_D14_MS = 14 * DAY_MS  # "recently" for the habit features: two weeks
_D3_MS = 3 * DAY_MS  # and "in the last days", for a compromise that has just begun
# payments above the card's habit: 1.5, 2 and 3 times its median at their time (generic
# multiples, not fitted; counting them per step lets a linear model weigh each step by how much
# more often a compromised card pays it, which one threshold cannot)
RATIO_STEPS = (1.5, 2.0, 3.0)
_MID, HIGH_RATIO, _TOP = RATIO_STEPS
_N_STEPS = len(RATIO_STEPS)
if _N_STEPS != 3:  # pragma: no cover - ``features`` is unrolled for three steps
    raise ImportError("CardWindows.features is written for three ratio steps")
# ``features`` is unrolled for these windows (a loop over them costs a tenth of its time).
if WINDOWS_DAYS != (1, 7, 30):  # pragma: no cover - a guard for whoever changes the windows
    raise ImportError("CardWindows.features is written for windows of 1, 7 and 30 days")
_D1_MS, _D7_MS, _D30_MS = (n * DAY_MS for n in WINDOWS_DAYS)
KEY_BYTES = 4
MAX_TERMINALS = 1 << 28

# "Is this card compromised, and is this payment the compromise's?" A compromise (stolen card
# details) makes a share of the card's payments for some days several times its usual ones;
# nothing else about them differs, so the evidence is in the amounts, summed from the day the
# compromise may have begun. ``compromise_logit`` is the log posterior odds of the generic
# hypothesis "from some day of the last two weeks, each payment is, with probability 1/2, the
# card's usual amount times 3": the card's amounts (as ratios to its median at their time)
# are normal around 1 with the spread of its own 30 days (interquartile range / 1.349, the
# normal's), and every start day of the last 14 is summed over with a prior of 1/1,000 a day.
# The hypothesis is not fitted to any data (a mixture of 2, 3 and 5 times ranked the same on
# two simulated data sets); the classifier learns what weight the posterior deserves.
COMPROMISE_FACTOR = 3.0
COMPROMISE_SHARE = 0.5
COMPROMISE_PRIOR = 1e-3
COMPROMISE_DAYS = 14
COMPROMISE_MIN_PAYMENTS = 4  # fewer in 30 days: no spread to judge by (the prior's logit)
_CV_LO, _CV_HI = 0.2, 2.0  # the spread's bounds, as a share of the median
_IQR_PER_SD = 1.349
_EVIDENCE_CAP = 5.0  # one payment's log evidence at most (a large one's own score is separate)
_EXP_CAP = 50.0
NO_COMPROMISE_EVIDENCE = log(COMPROMISE_PRIOR)


def terminal_key(number: int) -> bytes:
    """The card-window key of terminal number ``number`` (0 <= number < ``MAX_TERMINALS``):
    four 7-bit digits, the first one marked with the high bit."""
    if not 0 <= number < MAX_TERMINALS:
        raise OverflowError(f"terminal number {number} out of range")
    return bytes((0x80 | number >> 21, number >> 14 & 0x7F, number >> 7 & 0x7F, number & 0x7F))


def compromise_logit(
    ts: Sequence[int],
    ratios: Sequence[float],
    lo14: int,
    idx: int,
    ts_ms: int,
    ratio: float,
    window: Sequence[float],
    median: float,
) -> float:
    """The log posterior odds that this payment (``ratio`` to the card's median) is a card
    compromise's, given the card's payments ``[lo14, idx)`` of the last 14 days and the sorted
    amounts ``window`` of its previous 30 days (see ``COMPROMISE_FACTOR``). The compiled
    ``_card.features`` computes the same operations in the same order."""
    prev = len(window)
    if prev < COMPROMISE_MIN_PAYMENTS or median <= 0:
        return NO_COMPROMISE_EVIDENCE
    cv = (window[(3 * prev) >> 2] - window[prev >> 2]) / (_IQR_PER_SD * median)
    cv = min(max(cv, _CV_LO), _CV_HI)
    k = 0.5 / (cv * cv)
    inv_m = 1.0 / COMPROMISE_FACTOR
    keep = 1.0 - COMPROMISE_SHARE
    scaled = COMPROMISE_SHARE * inv_m
    total = odds = 0.0
    j = idx - 1
    bound = ts_ms - DAY_MS
    for _ in range(COMPROMISE_DAYS):  # a compromise begun in the last 1, 2, ... 14 days
        while j >= lo14 and ts[j] > bound:
            r = ratios[j]
            d0 = r - 1.0
            d1 = r * inv_m - 1.0
            t = k * (d0 * d0 - d1 * d1)
            total += min(log(keep + scaled * exp(min(t, _EXP_CAP))), _EVIDENCE_CAP)
            j -= 1
        odds += exp(min(total, _EXP_CAP))
        bound -= DAY_MS
    p = COMPROMISE_PRIOR * odds
    c = p / (1.0 + p)
    d0 = ratio - 1.0
    d1 = ratio * inv_m - 1.0
    t = min(k * (d0 * d0 - d1 * d1), _EXP_CAP)
    return log(c * scaled) + t - log(1.0 - c * COMPROMISE_SHARE)


class CardWindows:
    """The transactions of one card over the longest window, with prefix sums of amounts."""

    __slots__ = (
        "amounts",
        "cum",
        "levels",
        "mpos",
        "ratios",
        "terms",
        "ts",
        "whi",
        "window",
        "wlo",
    )
    # the array fields and their type codes (a checkpoint stores them column by column)
    ARRAYS = (
        ("ts", "q"),
        ("cum", "d"),
        ("amounts", "f"),
        ("ratios", "f"),
        ("levels", "i"),
        ("window", "f"),
    )

    def __init__(self) -> None:
        self.ts = array("q")
        self.cum = array("d", [0.0])  # cum[i] = sum of the first i amounts
        self.amounts = array("f")  # the amounts (float32: the median's input)
        self.ratios = array("f")  # each amount / the card's median before it (``features``)
        # levels[3 i + k] = ratios >= RATIO_STEPS[k] among the first i
        self.levels = array("i", [0] * _N_STEPS)
        self.terms = bytearray()  # KEY_BYTES per entry: terminal keys (``terminal_key``)
        # the amounts of the entries [wlo, whi), sorted: the next median is a few bisections
        # away (the entries that left the 30 days out, the latest one in); whi < 0: rebuild
        self.window = array("f")
        self.wlo = 0
        self.whi = -1
        # where the largest ratio of the previous transaction's 14 days was (the entries
        # before whi - 1): the next window usually gains one entry and rarely loses the
        # largest. mpos < 0: none (rescan)
        self.mpos = -1

    def add(self, ts_ms: int, amount: float, terminal: bytes) -> int:
        """Record a transaction (``terminal``: its terminal's key); returns its index.
        Out-of-order events are inserted in place."""
        ts = self.ts
        if not ts or ts_ms >= ts[-1]:
            ts.append(ts_ms)
            self.cum.append(self.cum[-1] + amount)
            self.amounts.append(amount)
            self.terms += terminal  # its ratio and prefix count: ``features`` appends them
            return len(ts) - 1
        pos = bisect_right(ts, ts_ms)
        ts.insert(pos, ts_ms)
        self.amounts.insert(pos, amount)
        self._pad(len(ts) - 1)
        self.ratios.insert(pos, 1.0)  # the later entries keep the ratios they were given
        levels, ratios = self.levels, self.ratios
        at = _N_STEPS * (pos + 1)
        levels[at:at] = levels[at - _N_STEPS : at]
        for i in range(pos + 2, len(ratios) + 1):  # the later prefix counts: the entry moved in
            r = ratios[i - 1]
            for k, step in enumerate(RATIO_STEPS):
                levels[_N_STEPS * i + k] = levels[_N_STEPS * (i - 1) + k] + (r >= step)
        self.whi = self.mpos = -1  # entries moved: the next transaction rescans its windows
        self.terms[pos * KEY_BYTES : pos * KEY_BYTES] = terminal
        amounts = [self.cum[i + 1] - self.cum[i] for i in range(len(self.cum) - 1)]
        amounts.insert(pos, amount)
        cum = array("d", [0.0])
        for a in amounts:
            cum.append(cum[-1] + a)
        self.cum = cum
        return pos

    def _pad(self, n: int) -> None:
        """Ratios (1) and prefix counts for entries added without ``features`` (up to n)."""
        ratios, levels = self.ratios, self.levels
        while len(ratios) < n:
            ratios.append(1.0)  # below every step: the counts stay
            levels.extend(levels[-_N_STEPS:])

    def compact(self, now_ms: int) -> None:
        """Drop entries that no window ending at or after ``now_ms`` can see."""
        lo = bisect_right(self.ts, now_ms - _HORIZON_MS)
        if lo > _SLACK:
            self._pad(len(self.ts))
            base = self.cum[lo]
            del self.ts[:lo]
            del self.amounts[:lo]
            del self.ratios[:lo]
            del self.terms[: lo * KEY_BYTES]
            self.cum = array("d", (c - base for c in self.cum[lo:]))
            bases = self.levels[_N_STEPS * lo : _N_STEPS * (lo + 1)]
            self.levels = array(
                "i",
                (c - bases[j % _N_STEPS] for j, c in enumerate(self.levels[_N_STEPS * lo :])),
            )
            if self.whi >= 0 and self.wlo >= lo:
                self.wlo -= lo
                self.whi -= lo
                self.mpos = self.mpos - lo if self.mpos >= lo else -1
            else:
                self.whi = self.mpos = -1

    def _largest_recent_ratio(self, lo14: int, idx: int) -> float:
        """The largest ratio of the entries ``[lo14, idx)`` (0 without any), carried on from
        the previous transaction's window while its largest is still in it (``mpos``)."""
        ratios = self.ratios
        if lo14 >= idx:
            self.mpos = -1
            return 0.0
        if 0 < self.whi <= idx + 1 and self.mpos >= lo14:  # still in: extend the window
            mpos = self.mpos
            top_ratio = ratios[mpos]
            for j in range(self.whi - 1, idx):
                if ratios[j] >= top_ratio:
                    top_ratio, mpos = ratios[j], j
            self.mpos = mpos
            return top_ratio
        recent = ratios[lo14:idx]
        top_ratio = max(recent)
        self.mpos = lo14 + recent.index(top_ratio)
        return top_ratio

    def features(
        self, idx: int, ts_ms: int, amount: float, terminal: bytes, out: list[float]
    ) -> None:
        """Append the card features of the transaction at ``idx`` to ``out``.

        Order: for n in (1, 7, 30): count, mean amount; then amount ratio to the previous 30 days'
        mean, seconds since the previous transaction, count in the last hour, new terminal; then
        the habit features: amount ratio to the previous 30 days' median, how many of the
        previous 14 days' payments were at least ``HIGH_RATIO`` times the median of their time,
        and the largest such ratio over those 14 days (0 without any); how many of the previous
        14 days' payments were at least 1.5 and 3 times it, and of the previous 3 days' at least
        1.5, 2 and 3 times (``RATIO_STEPS``).
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
        if len(self.ratios) < idx:
            self._pad(idx)
        amounts, levels, ratios = self.amounts, self.levels, self.ratios
        window = self.window
        if self.whi == idx and self.wlo <= lo30:  # the previous transaction's window: slide it
            for j in range(self.wlo, lo30):
                del window[bisect_left(window, amounts[j])]
        else:  # the first transaction, or after an out-of-order one
            window = self.window = array("f", sorted(amounts[lo30:idx]))
        if prev:
            half = prev >> 1
            median = window[half] if prev & 1 else (window[half - 1] + window[half]) * 0.5
            ratio = amount / median if median > 0 else 1.0
            lo14 = bisect_right(ts, ts_ms - _D14_MS, lo30, idx)
            lo3 = bisect_right(ts, ts_ms - _D3_MS, lo14, idx)
            # unrolled: generator expressions here cost a fifth of the card features' time
            a, b, c = 3 * idx, 3 * lo14, 3 * lo3
            mid1, high1, top1 = levels[a], levels[a + 1], levels[a + 2]
            mid = float(mid1 - levels[b])
            high = float(high1 - levels[b + 1])
            top14 = float(top1 - levels[b + 2])
            mid3 = float(mid1 - levels[c])
            high3 = float(high1 - levels[c + 1])
            top3 = float(top1 - levels[c + 2])
            top_ratio = self._largest_recent_ratio(lo14, idx)
            compromise = compromise_logit(ts, ratios, lo14, idx, ts_ms, ratio, window, median)
        else:
            ratio, top_ratio, self.mpos = 1.0, 0.0, -1
            mid = high = top14 = mid3 = high3 = top3 = 0.0
            compromise = NO_COMPROMISE_EVIDENCE
        insort(window, amounts[idx])
        self.wlo, self.whi = lo30, idx + 1
        if len(ratios) == idx:  # in order: this entry's ratio and prefix counts come last
            ratios.append(ratio)
            r = ratios[idx]  # as stored (float32), like the counts of entries moved later
            a = 3 * idx  # the last three: this entry's counts come after them
            levels.append(levels[a] + (r >= _MID))
            levels.append(levels[a + 1] + (r >= HIGH_RATIO))
            levels.append(levels[a + 2] + (r >= _TOP))
        else:  # an earlier entry (out of order): the later prefix counts move with it
            ratios[idx] = ratio
            r = ratios[idx]
            for k, step in enumerate(RATIO_STEPS):
                shift = (r >= step) - (levels[3 * idx + 3 + k] - levels[3 * idx + k])
                if shift:
                    for j in range(3 * idx + 3 + k, len(levels), 3):
                        levels[j] += shift
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
            # the key in the entries [lo30, idx): a match can only start at an entry
            1.0 if self.terms.find(terminal, lo30 * KEY_BYTES, idx * KEY_BYTES) < 0 else 0.0,
            ratio,
            high,
            top_ratio,
            mid,
            top14,
            mid3,
            high3,
            top3,
            compromise,
        )


# The two per-transaction steps as ``FeatureEngine`` calls them: compiled (``_card.pyx``, built
# by ``pip install`` when a C compiler is there) or, without the build, the methods above. The
# compiled ones run the in-order case and hand every other one to these methods.
add_entry: Callable[[CardWindows, int, float, bytes], int]
entry_features: Callable[[CardWindows, int, int, float, bytes, list[float]], None]
try:
    from streams.features._card import add as add_entry
    from streams.features._card import features as entry_features

    COMPILED = True
except ImportError:  # pragma: no cover - a build without a C compiler
    add_entry, entry_features, COMPILED = CardWindows.add, CardWindows.features, False
