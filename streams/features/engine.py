"""The stage-1 feature code: one transaction in, its feature vector out (MODEL_FEATURES order).

The same object serves the stream workers, ``features``, ``train``, ``evaluate`` and
``rules backtest``: there is no second implementation.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import numpy as np

from streams.features.card import KEY_BYTES, CardWindows, add_entry, entry_features, terminal_key
from streams.features.names import DAY_MS, MODEL_FEATURES
from streams.features.terminal import TerminalTable

if TYPE_CHECKING:
    from streams.checkpoint.codec import StateReader, StateWriter

_HOUR_MS = 3_600_000
N_FEATURES = len(MODEL_FEATURES)


def calendar(ts_ms: int) -> tuple[float, float, int, int]:
    """(weekend, night, hour, weekday Monday=0) of a UTC epoch-ms time.

    >>> calendar(1522540831000)  # Sunday 2018-04-01 00:00:31
    (1.0, 1.0, 0, 6)
    """
    weekday = (ts_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    hour = (ts_ms % DAY_MS) // _HOUR_MS
    return (1.0 if weekday >= 5 else 0.0), (1.0 if hour <= 6 else 0.0), hour, weekday


class FeatureEngine:
    """Per-card windows (this worker's partitions) and the shared terminal label table."""

    def __init__(self) -> None:
        self.cards: dict[str, CardWindows] = {}
        self.terminals = TerminalTable()
        # Per terminal id: one str object (the terminal table keeps references; a decoded
        # message brings a fresh copy of the id each time) and its card-window key.
        self._terminal_ids: dict[str, tuple[str, bytes]] = {}

    def transform(self, card: str, terminal: str, amount: float, ts_ms: int) -> list[float]:
        """Update the card's state with this transaction and return its feature vector."""
        row: list[float] = []
        self.transform_into(card, terminal, amount, ts_ms, row)
        return row

    def transform_into(
        self, card: str, terminal: str, amount: float, ts_ms: int, out: list[float]
    ) -> None:
        """``transform``, appending the vector to ``out`` (a batch fills one flat list)."""
        state = self.cards.get(card)
        if state is None:
            state = self.cards[card] = CardWindows()
        known = self._terminal_ids.get(terminal)
        if known is None:
            known = self._terminal_ids[terminal] = (terminal, terminal_key(len(self._terminal_ids)))
        terminal, key = known
        idx = add_entry(state, ts_ms, amount, key)
        day, in_day = divmod(ts_ms, DAY_MS)  # calendar(ts_ms), inlined: weekend, night
        out += (
            amount,
            1.0 if (day + 3) % 7 >= 5 else 0.0,
            1.0 if in_day // _HOUR_MS <= 6 else 0.0,
        )
        entry_features(state, idx, ts_ms, amount, key, out)
        self.terminals.features(terminal, ts_ms, out)
        if idx >= 128 and idx & 31 == 0:
            state.compact(ts_ms)

    def transform_many(
        self,
        cards: list[str],
        terminals: list[str],
        amounts: list[float],
        times: list[int],
        labels: list[int] | None = None,
    ) -> np.ndarray:
        """``transform`` of each transaction in order: a (rows, N_FEATURES) float64 matrix.

        ``labels`` (offline replays of labelled history only) hands each transaction's label
        (with its card and amount, as the labels topic carries them) to the terminal table right
        after it; the table's delay filter keeps it unseen for 7 days.
        """
        flat: list[float] = []
        into, add_label = self.transform_into, self.terminals.add_label
        if labels is None:
            for args in zip(cards, terminals, amounts, times, strict=True):
                into(*args, flat)
        else:
            for card, terminal, amount, ts_ms, fraud in zip(
                cards, terminals, amounts, times, labels, strict=True
            ):
                into(card, terminal, amount, ts_ms, flat)
                add_label(terminal, ts_ms, fraud, card, amount)
        return np.array(flat, dtype=np.float64).reshape(len(cards), N_FEATURES)

    def add_label(
        self, terminal: str, ts_ms: int, fraud: int, card: str = "", amount: float = 0.0
    ) -> None:
        self.terminals.add_label(terminal, ts_ms, fraud, card, amount)

    def save_cards(self, w: StateWriter, name: str) -> None:
        """The card windows and the terminal numbering their keys use (not the terminal
        table: it is the worker's, saved once for all its partitions)."""
        w.strings(f"{name}.terminals", list(self._terminal_ids))
        w.strings(f"{name}.ids", list(self.cards))
        windows = list(self.cards.values())
        for field, code in CardWindows.ARRAYS:
            flat = array(code)
            for state in windows:
                flat.extend(getattr(state, field))
            w.pyarray(f"{name}.{field}", flat)
            w.numpy(
                f"{name}.{field}.len",
                np.fromiter((len(getattr(s, field)) for s in windows), np.int64, len(windows)),
            )
        w.raw(f"{name}.terms", b"".join(state.terms for state in windows))
        w.numpy(f"{name}.bounds", np.array([(s.wlo, s.whi) for s in windows], np.int64))

    def load_cards(self, r: StateReader, name: str) -> None:
        from streams.checkpoint.codec import split_pyarrays

        terminals = r.strings(f"{name}.terminals")
        self._terminal_ids = {t: (t, terminal_key(i)) for i, t in enumerate(terminals)}
        ids = r.strings(f"{name}.ids")
        windows = [CardWindows() for _ in ids]
        for field, _ in CardWindows.ARRAYS:
            pieces = split_pyarrays(r.pyarray(f"{name}.{field}"), r.numpy(f"{name}.{field}.len"))
            for state, piece in zip(windows, pieces, strict=True):
                setattr(state, field, piece)
        terms = r.raw(f"{name}.terms")
        at = 0
        bounds = r.numpy(f"{name}.bounds").tolist()
        for state, (wlo, whi) in zip(windows, bounds, strict=True):
            end = at + len(state.ts) * KEY_BYTES
            state.terms = bytearray(terms[at:end])
            state.wlo, state.whi = wlo, whi
            at = end
        self.cards = dict(zip(ids, windows, strict=True))

    def forget_cards(self, keep: set[str] | None = None) -> None:
        """Drop per-card state (all of it, or all but ``keep``), e.g. after a partition moves."""
        if keep is None:
            self.cards.clear()
        else:
            self.cards = {k: v for k, v in self.cards.items() if k in keep}
