"""Read a handbook-format CSV (``.csv`` or ``.csv.gz``) into a typed frame in stream order."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl

from streams.errors import DataError

REQUIRED_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
OPTIONAL_COLUMNS = ("TX_FRAUD", "TX_FRAUD_SCENARIO", "TX_TIME_SECONDS", "TX_TIME_DAYS")


def read_handbook(
    path: Path | str,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
) -> pl.DataFrame:
    """Rows sorted by time then id, with ``ts_ms`` (epoch ms, UTC) added.

    ``start`` is inclusive, ``end`` exclusive. Raises DataError naming the row and column of the
    first bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        df = pl.read_csv(path, infer_schema_length=10_000)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from None
    return read_handbook_frame(df, start, end, str(path))


def read_handbook_frame(
    df: pl.DataFrame,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    path: str = "<frame>",
) -> pl.DataFrame:
    """``read_handbook`` for a frame already in memory (e.g. from the simulator)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; have {df.columns}")
    ts = pl.col("TX_DATETIME").cast(pl.Utf8).str.to_datetime(strict=False, time_unit="ms")
    df = df.with_columns(
        ts.dt.replace_time_zone("UTC").dt.epoch("ms").alias("ts_ms"),
        pl.col("TX_AMOUNT").cast(pl.Float64, strict=False),
    )
    for column, check in (
        ("ts_ms", pl.col("ts_ms").is_null()),
        ("TX_AMOUNT", pl.col("TX_AMOUNT").is_null() | (pl.col("TX_AMOUNT") < 0)),
    ):
        bad = df.with_row_index("_row").filter(check)
        if bad.height:
            row = int(bad["_row"][0]) + 2  # 1-based, after the header line
            source = "TX_DATETIME" if column == "ts_ms" else column
            raise DataError(f"{path}: row {row}, column {source}: invalid value")
    if "TX_FRAUD" in df.columns:
        df = df.with_columns(pl.col("TX_FRAUD").cast(pl.Int8))
    df = df.sort(["ts_ms", "TRANSACTION_ID"], maintain_order=True)
    if start is not None:
        df = df.filter(pl.col("ts_ms") >= to_epoch_ms(start))
    if end is not None:
        df = df.filter(pl.col("ts_ms") < to_epoch_ms(end))
    return df


def to_epoch_ms(value: date | datetime) -> int:
    """UTC epoch milliseconds of a naive date or datetime."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return int(pl.Series([value]).dt.replace_time_zone("UTC").dt.epoch("ms")[0])
