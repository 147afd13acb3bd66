"""Train/delay/test folds of the handbook's protocols, on its data or on any handbook-format data.

A fold is a 7-day training week, a 7-day delay week (labels not yet known), then a 7-day test
week. Chapter 5 uses four folds whose training weeks start 2018-07-25, 08-01, 08-08 and 08-15
(test weeks start 08-08, 08-15, 08-22, 08-29); Chapter 3 is the first of them alone.

Other data (e.g. the project's simulator with another start date or length): when the data does
not cover the protocol's handbook dates, the same shape is placed relative to the data. The four
chapter-5 folds are laid out 7 days apart so that the last test week ends on the data's last day;
folds whose training week would start before the data's first day are dropped (their order is
kept, the earliest first). Chapter 3 is the first remaining fold. Data shorter than one fold
(21 days) is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from streams.errors import ConfigError, DataError

PROTOCOLS = ("handbook-ch3", "handbook-ch5")
WEEK = 7
FOLD_DAYS = 3 * WEEK
HANDBOOK_TRAIN_STARTS = (date(2018, 7, 25), date(2018, 8, 1), date(2018, 8, 8), date(2018, 8, 15))


@dataclass(frozen=True)
class Fold:
    """One fold; every ``*_end`` is the last day included (UTC calendar days)."""

    index: int
    train_start: date
    train_end: date
    delay_start: date
    delay_end: date
    test_start: date
    test_end: date

    @classmethod
    def starting(cls, index: int, train_start: date) -> Fold:
        day = timedelta(days=1)
        week = timedelta(days=WEEK)
        return cls(
            index=index,
            train_start=train_start,
            train_end=train_start + week - day,
            delay_start=train_start + week,
            delay_end=train_start + 2 * week - day,
            test_start=train_start + 2 * week,
            test_end=train_start + 3 * week - day,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "fold": self.index,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "delay_start": self.delay_start.isoformat(),
            "delay_end": self.delay_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def _count(protocol: str) -> int:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return 1 if protocol == "handbook-ch3" else len(HANDBOOK_TRAIN_STARTS)


def handbook_folds(protocol: str) -> list[Fold]:
    """The protocol's folds on the handbook's own dates."""
    n = _count(protocol)
    return [Fold.starting(i, start) for i, start in enumerate(HANDBOOK_TRAIN_STARTS[:n])]


def folds(
    protocol: str, data_start: date | None = None, data_end: date | None = None
) -> list[Fold]:
    """The protocol's folds for data whose first and last days are ``data_start``/``data_end``.

    Without bounds, or when the data covers the handbook's folds, the handbook's dates are used;
    otherwise the folds are placed relative to the data (see the module docstring).
    """
    handbook = handbook_folds(protocol)
    if data_start is None or data_end is None:
        return handbook
    if data_end < data_start:
        raise DataError(f"data ends ({data_end}) before it starts ({data_start})")
    if data_start <= handbook[0].train_start and handbook[-1].test_end <= data_end:
        return handbook
    last_train_start = data_end - timedelta(days=FOLD_DAYS - 1)
    n_layout = len(HANDBOOK_TRAIN_STARTS)
    starts = [last_train_start - timedelta(days=WEEK * (n_layout - 1 - i)) for i in range(n_layout)]
    starts = [s for s in starts if s >= data_start]
    if not starts:
        span = (data_end - data_start).days + 1
        raise DataError(
            f"data covers {span} day(s) ({data_start} to {data_end}); a fold needs {FOLD_DAYS} "
            "(7 training, 7 delay, 7 test)"
        )
    starts = starts[: _count(protocol)]
    return [Fold.starting(i, s) for i, s in enumerate(starts)]
