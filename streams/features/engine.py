"""The stage-1 feature code: one transaction in, its feature vector out (MODEL_FEATURES order).

The same object serves the stream workers, ``features``, ``train``, ``evaluate`` and
``rules backtest``: there is no second implementation.
"""

from __future__ import annotations

from streams.features.card import CardWindows
from streams.features.names import DAY_MS, MODEL_FEATURES
from streams.features.terminal import TerminalTable

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

    def transform(self, card: str, terminal: str, amount: float, ts_ms: int) -> list[float]:
        """Update the card's state with this transaction and return its feature vector."""
        state = self.cards.get(card)
        if state is None:
            state = self.cards[card] = CardWindows()
        idx = state.add(ts_ms, amount, terminal)
        weekend, night, _, _ = calendar(ts_ms)
        row = [amount, weekend, night]
        state.features(idx, ts_ms, amount, terminal, row)
        self.terminals.features(terminal, ts_ms, row)
        if idx >= 128 and idx & 31 == 0:
            state.compact(ts_ms)
        return row

    def add_label(self, terminal: str, ts_ms: int, fraud: int) -> None:
        self.terminals.add_label(terminal, ts_ms, fraud)

    def forget_cards(self, keep: set[str] | None = None) -> None:
        """Drop per-card state (all of it, or all but ``keep``), e.g. after a partition moves."""
        if keep is None:
            self.cards.clear()
        else:
            self.cards = {k: v for k, v in self.cards.items() if k in keep}
