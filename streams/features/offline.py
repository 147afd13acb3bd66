"""Features over a whole handbook-format history, in stream order, with the stream code."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from streams.features.engine import FeatureEngine
from streams.features.names import MODEL_FEATURES

_CHUNK = 65_536  # rows per engine call (and per progress step)


def compute_features(
    df: pl.DataFrame,
    engine: FeatureEngine | None = None,
    progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """Feature frame (MODEL_FEATURES columns, one row per input row, same order).

    ``df`` needs ``CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, ts_ms`` and, for the terminal features,
    ``TX_FRAUD``. Each label is handed to the terminal table right after its transaction; the
    table's own delay filter (t − 7 days) keeps it unseen until the delay has passed, exactly as
    when labels arrive from the labels topic a week later.
    """
    engine = engine or FeatureEngine()
    cards = df["CUSTOMER_ID"].cast(pl.Utf8).to_list()
    terms = df["TERMINAL_ID"].cast(pl.Utf8).to_list()
    amounts = df["TX_AMOUNT"].cast(pl.Float64).to_list()
    times = df["ts_ms"].cast(pl.Int64).to_list()
    frauds = df["TX_FRAUD"].cast(pl.Int64).to_list() if "TX_FRAUD" in df.columns else None
    out = np.empty((len(cards), len(MODEL_FEATURES)), dtype=np.float64)
    for start in range(0, len(cards), _CHUNK):
        end = min(len(cards), start + _CHUNK)
        out[start:end] = engine.transform_many(
            cards[start:end],
            terms[start:end],
            amounts[start:end],
            times[start:end],
            frauds[start:end] if frauds is not None else None,
        )
        if progress is not None:
            progress(end - start)
    return pl.DataFrame(out, schema=MODEL_FEATURES)
