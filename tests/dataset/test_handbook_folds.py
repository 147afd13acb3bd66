"""The handbook protocol's folds on the handbook's published data set (DATA.md)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from streams.data.handbook import read_handbook
from streams.evaluation.handbook_metrics import card_precision_at_k, day_number, remove_known_cards
from streams.evaluation.protocol import folds

pytestmark = [pytest.mark.dataset, pytest.mark.slow]


def test_perfect_scorer_reaches_the_published_bound(handbook_path: Path) -> None:
    """DATA.md: a perfect scorer gets CP@100 0.397, 0.409, 0.420, 0.451 on the four folds."""
    df = read_handbook(handbook_path, end=date(2018, 9, 5))
    df = df.with_columns((pl.col("ts_ms") // 86_400_000).alias("day"))
    got = []
    for f in folds("handbook-ch5", date(2018, 4, 1), date(2018, 9, 30)):
        in_test = pl.col("day").is_between(day_number(f.test_start), day_number(f.test_end))
        in_hist = pl.col("day").is_between(day_number(f.train_start), day_number(f.test_end))
        kept = remove_known_cards(df.filter(in_test), df.filter(in_hist), f.train_start)
        perfect = kept.select(
            "CUSTOMER_ID", "day", pl.col("TX_FRAUD").cast(pl.Float64).alias("score"), "TX_FRAUD"
        )
        got.append(round(card_precision_at_k(perfect, k=100)[0], 3))
        if f.index == 0:  # the handbook's chapter-3 test set
            assert (kept.height, int(kept["TX_FRAUD"].sum())) == (58264, 385)
    assert got == [0.397, 0.409, 0.420, 0.451]
