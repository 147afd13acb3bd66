"""Fixtures over the handbook's published data set; every test here skips when it is absent.

The data (DATA.md) is not part of the project: it lives beside the repository, in
``../shared/data/fdh/transactions.csv.gz``, and a user's machine usually does not have it.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from streams.data.handbook import read_handbook
from streams.features.offline import compute_features
from tests.support import DATASET


@pytest.fixture(scope="session")
def handbook_path() -> Path:
    if not DATASET.is_file():
        pytest.skip(f"handbook data set absent: {DATASET} (see DATA.md)")
    return DATASET


@pytest.fixture(scope="session")
def transactions(handbook_path: Path) -> pl.DataFrame:
    return read_handbook(handbook_path)


@pytest.fixture(scope="session")
def stream_features(transactions: pl.DataFrame) -> pl.DataFrame:
    """MODEL_FEATURES of every row, computed by the stream code (about 30 s)."""
    began = time.perf_counter()
    features = compute_features(transactions)
    elapsed = time.perf_counter() - began
    print(
        f"\ncompute_features: {transactions.height} rows in {elapsed:.1f} s "
        f"({transactions.height / elapsed:,.0f} tx/s)"
    )
    return features
