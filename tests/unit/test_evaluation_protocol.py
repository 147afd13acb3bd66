"""Fold layouts of the handbook protocols, on the handbook's dates and on other data."""

from __future__ import annotations

from datetime import date

import pytest

from streams.errors import ConfigError, DataError
from streams.evaluation.protocol import Fold, folds


def test_ch5_handbook_dates():
    fs = folds("handbook-ch5")
    assert [f.train_start for f in fs] == [
        date(2018, 7, 25),
        date(2018, 8, 1),
        date(2018, 8, 8),
        date(2018, 8, 15),
    ]
    assert [f.test_start for f in fs] == [
        date(2018, 8, 8),
        date(2018, 8, 15),
        date(2018, 8, 22),
        date(2018, 8, 29),
    ]
    f0 = fs[0]
    assert (f0.train_end, f0.delay_start, f0.delay_end, f0.test_end) == (
        date(2018, 7, 31),
        date(2018, 8, 1),
        date(2018, 8, 7),
        date(2018, 8, 14),
    )
    assert [f.index for f in fs] == [0, 1, 2, 3]


def test_ch3_is_the_first_fold():
    assert folds("handbook-ch3") == folds("handbook-ch5")[:1]


def test_handbook_data_keeps_handbook_dates():
    assert folds("handbook-ch5", date(2018, 4, 1), date(2018, 9, 30)) == folds("handbook-ch5")


def test_other_data_last_test_week_ends_on_last_day():
    fs = folds("handbook-ch5", date(2020, 1, 1), date(2020, 3, 1))
    assert [f.train_start for f in fs] == [
        date(2020, 1, 20),
        date(2020, 1, 27),
        date(2020, 2, 3),
        date(2020, 2, 10),
    ]
    assert fs[-1].test_end == date(2020, 3, 1)
    assert folds("handbook-ch3", date(2020, 1, 1), date(2020, 3, 1)) == fs[:1]


def test_short_data_keeps_the_folds_that_fit():
    fs = folds("handbook-ch5", date(2020, 1, 1), date(2020, 1, 30))  # 30 days
    assert [f.train_start for f in fs] == [date(2020, 1, 3), date(2020, 1, 10)]
    assert [f.index for f in fs] == [0, 1]
    assert folds("handbook-ch5", date(2020, 1, 1), date(2020, 1, 21)) == [
        Fold.starting(0, date(2020, 1, 1))
    ]


def test_too_short_or_unknown():
    with pytest.raises(DataError, match="21"):
        folds("handbook-ch5", date(2020, 1, 1), date(2020, 1, 20))
    with pytest.raises(ConfigError, match="handbook-ch3"):
        folds("chapter-9")
