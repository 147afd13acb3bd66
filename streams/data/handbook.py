"""Read a handbook-format CSV (``.csv`` or ``.csv.gz``) into a typed frame in stream order."""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from streams.errors import DataError

REQUIRED_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
OPTIONAL_COLUMNS = ("TX_FRAUD", "TX_FRAUD_SCENARIO", "TX_TIME_SECONDS", "TX_TIME_DAYS")
ID_COLUMNS = ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID")
HANDBOOK_COLUMNS = frozenset({*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "ts_ms"})
# Other columns named like a transaction attribute (lower_snake_case) are the transactions'
# extra fields: ``produce`` publishes them, stage 1's offline runs carry them (rules read them).
EXTRA_COLUMN = re.compile(r"[a-z](?:_?[a-z0-9]){0,63}")
# The simulator's attributes are codes and names: read as text (an MCC "0742" stays "0742")
STRING_COLUMNS = ("card_country", "merchant_country", "mcc", "channel")
INFER_ROWS = 10_000


def extra_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in HANDBOOK_COLUMNS and EXTRA_COLUMN.fullmatch(c)]


def extra_fields(df: pl.DataFrame) -> list[dict[str, Any]] | None:
    """Per row, the frame's extra columns (``extra_columns``) as the transaction's extra
    fields (e.g. ``simulate --attributes``), nulls left out; None when there are none."""
    names = extra_columns(df)
    if not names:
        return None
    return [{k: v for k, v in row.items() if v is not None} for row in df.select(names).to_dicts()]


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
        header = pl.read_csv(path, n_rows=0).columns
        strings = {c: pl.Utf8 for c in STRING_COLUMNS if c in header}
        df = pl.read_csv(path, infer_schema_length=INFER_ROWS, schema_overrides=strings)
    except Exception as exc:
        raise DataError(explain_csv_error(path, exc)) from None
    return read_handbook_frame(df, start, end, str(path))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace", newline="")


def explain_csv_error(path: Path, exc: Exception) -> str:
    """One line naming the row and column that polars could not parse (it says neither).

    Only runs once reading has failed: a row with the wrong number of fields, else the first
    value that does not fit the type inferred from the first rows.
    """
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return f"{path}: empty file, expected a header line"
            for row_number, row in enumerate(reader, start=2):
                if row and len(row) != len(header):
                    return (
                        f"{path}: row {row_number}: {len(row)} fields, the header has {len(header)}"
                    )
        inferred = pl.scan_csv(path, infer_schema_length=INFER_ROWS).collect_schema()
        text = pl.read_csv(path, infer_schema=False)
        for column, dtype in inferred.items():
            if dtype == pl.String:
                continue
            values = text[column]
            bad = (values.cast(dtype, strict=False).is_null() & values.is_not_null()).arg_true()
            if len(bad):
                index = int(bad[0])
                return (
                    f"{path}: row {index + 2}, column {column}: invalid value "
                    f"{values[index]!r} (the rows before it hold {dtype} values)"
                )
    except Exception:  # the explanation is best effort; fall back to polars' first line
        pass
    return f"{path}: cannot read as CSV: {_first_line(exc)}"


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
        pl.col("TX_AMOUNT").cast(pl.Float64, strict=False).alias("_amount"),
    )
    checks: list[tuple[str, pl.Expr, str]] = [
        ("TRANSACTION_ID", pl.col("TRANSACTION_ID").is_null(), ""),
        ("TX_DATETIME", pl.col("ts_ms").is_null(), "expected YYYY-MM-DD HH:MM:SS"),
        ("CUSTOMER_ID", pl.col("CUSTOMER_ID").is_null(), ""),
        ("TERMINAL_ID", pl.col("TERMINAL_ID").is_null(), ""),
        (
            "TX_AMOUNT",
            pl.col("_amount").is_null() | (pl.col("_amount") < 0),
            "expected a non-negative number",
        ),
    ]
    temporary = ["_amount"]
    if "TX_FRAUD" in df.columns:
        df = df.with_columns(pl.col("TX_FRAUD").cast(pl.Int8, strict=False).alias("_fraud"))
        temporary.append("_fraud")
        bad_fraud = pl.col("_fraud").is_null() | ~pl.col("_fraud").is_in([0, 1])
        checks.append(("TX_FRAUD", bad_fraud, "expected 0 or 1"))
    for column, check, expected in checks:
        bad = df.with_row_index("_row").filter(check)
        if bad.height:
            row = int(bad["_row"][0]) + 2  # 1-based, after the header line
            value = bad[column][0]
            problem = "missing value" if value is None else f"invalid value {value!r}"
            if expected and value is not None:
                problem += f" ({expected})"
            raise DataError(f"{path}: row {row}, column {column}: {problem}")
    df = df.with_columns(pl.col("_amount").alias("TX_AMOUNT"))
    if "TX_FRAUD" in df.columns:
        df = df.with_columns(pl.col("_fraud").alias("TX_FRAUD"))
    df = df.drop(temporary)
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
