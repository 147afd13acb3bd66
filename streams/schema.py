"""Transactions at the topic boundary: decoded and validated in one place.

A transaction is a JSON object with ``transaction_id, card_id, terminal_id, amount, timestamp``
(ISO 8601 or epoch milliseconds, UTC) and any extra fields, which are kept as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from streams.errors import DecodeError, ValidationError

REQUIRED_FIELDS = ("transaction_id", "card_id", "terminal_id", "amount", "timestamp")
MAX_AMOUNT = 1e9
# Event times outside [1970, 2200) are rejected as invalid.
_MAX_TS_MS = 7_258_118_400_000


@dataclass(slots=True)
class Transaction:
    transaction_id: str
    card_id: str
    terminal_id: str
    amount: float
    ts_ms: int
    raw: dict[str, Any] = field(repr=False)


def parse_timestamp(value: Any) -> int:
    """Epoch milliseconds from epoch ms (int/float) or an ISO 8601 string (UTC if no zone).

    >>> parse_timestamp("2018-04-01T00:00:31")
    1522540831000
    >>> parse_timestamp(1522540831000)
    1522540831000
    """
    if isinstance(value, bool):
        raise ValidationError(f"timestamp must be ISO 8601 or epoch ms, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValidationError("timestamp is not finite")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(f"timestamp is not ISO 8601: {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = round(dt.timestamp() * 1000)
    else:
        raise ValidationError(f"timestamp must be ISO 8601 or epoch ms, got {type(value).__name__}")
    if not 0 <= ms < _MAX_TS_MS:
        raise ValidationError(f"timestamp out of range: {value!r}")
    return ms


_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> epoch ms of its midnight, by parse_timestamp
_MINUTES: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch ms of that minute (canonical only)
_CACHE_LIMIT = 4096


def _minute_ms(prefix: str) -> int | None:
    """Epoch ms of the minute ``YYYY-MM-DDTHH:MM`` (a canonical time's first 16 characters), or
    None when the prefix is not of that shape. The date is parsed once by ``parse_timestamp``
    and cached; hour and minute are added exactly, which is what it computes for this shape."""
    if prefix[10] != "T" or prefix[13] != ":" or not prefix.isascii():
        return None
    hour, minute = prefix[11:13], prefix[14:16]
    if not (hour.isdigit() and minute.isdigit() and hour < "24" and minute < "60"):
        return None
    day = prefix[:10]
    base = _DAYS.get(day)
    if base is None:
        try:
            base = parse_timestamp(day + "T00:00:00Z")
        except ValidationError:
            return None  # let parse_timestamp report it
        if len(_DAYS) >= _CACHE_LIMIT:
            _DAYS.clear()
        _DAYS[day] = base
    base += (int(hour) * 60 + int(minute)) * 60_000
    if len(_MINUTES) >= _CACHE_LIMIT:
        _MINUTES.clear()
    _MINUTES[prefix] = base
    return base


def _canonical_ms(text: str) -> int | None:
    """Epoch ms of ``YYYY-MM-DDTHH:MM:SS.fffZ`` (what producers here write), or None for any
    other shape: the minute from a cache (``_minute_ms``), plus seconds and milliseconds
    (``SSfff`` read as one integer)."""
    if len(text) != 24 or text[16] != ":" or text[19] != "." or text[23] != "Z":
        return None
    prefix = text[:16]
    base = _MINUTES.get(prefix)
    if base is None:
        base = _minute_ms(prefix)
        if base is None:
            return None
    rest = text[17:19] + text[20:23]  # seconds and milliseconds: "SSfff" < "60000"
    if not (rest.isascii() and rest.isdigit()) or rest >= "60000":
        return None
    ms = base + int(rest)
    return ms if ms < _MAX_TS_MS else None


def _ident(obj: dict[str, Any], name: str) -> str:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(f"{name} must be a string or an integer")
    text = str(value)
    if not text or len(text) > 128:
        raise ValidationError(f"{name} must have 1 to 128 characters")
    return text


def validate(obj: Any) -> Transaction:
    """A decoded JSON value to a Transaction, or ValidationError naming what is wrong."""
    if type(obj) is dict:  # fast path: a well-formed transaction with string ids, float amount
        try:
            tid, card, terminal = obj["transaction_id"], obj["card_id"], obj["terminal_id"]
            amount, when = obj["amount"], obj["timestamp"]
        except KeyError:
            return _validate(obj)  # reports the missing fields
        if (
            type(tid) is str
            and type(card) is str
            and type(terminal) is str
            and type(amount) is float
            and type(when) is str
            and 0 < len(tid) <= 128
            and 0 < len(card) <= 128
            and 0 < len(terminal) <= 128
            and 0.0 <= amount <= MAX_AMOUNT  # False for NaN and infinities too
        ):
            ts_ms = _canonical_ms(when)
            if ts_ms is not None:
                return Transaction(tid, card, terminal, amount, ts_ms, obj)
    return _validate(obj)


def _validate(obj: Any) -> Transaction:
    if not isinstance(obj, dict):
        raise ValidationError(f"transaction must be a JSON object, got {type(obj).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in obj]
    if missing:
        raise ValidationError(f"missing field(s): {', '.join(missing)}")
    amount = obj["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ValidationError("amount must be a number")
    amount = float(amount)
    if not math.isfinite(amount) or amount < 0 or amount > MAX_AMOUNT:
        raise ValidationError(f"amount out of range [0, {MAX_AMOUNT:g}]: {amount!r}")
    return Transaction(
        transaction_id=_ident(obj, "transaction_id"),
        card_id=_ident(obj, "card_id"),
        terminal_id=_ident(obj, "terminal_id"),
        amount=amount,
        ts_ms=parse_timestamp(obj["timestamp"]),
        raw=obj,
    )


def decode(value: bytes | None) -> Transaction:
    """Kafka message bytes to a Transaction; DecodeError or ValidationError otherwise."""
    if value is None:
        raise DecodeError("message has no value (tombstone)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid UTF-8 JSON: {exc}") from None
    return validate(obj)


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def iso_utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# The functions above are the reference; the build compiles their usual case
# (``streams/_schema.pyx``), which hands every other one back to ``_validate``.
REFERENCE = (decode, validate)
COMPILED = False
if not TYPE_CHECKING:
    try:
        from streams._schema import decode, validate

        COMPILED = True
    except ImportError:  # pragma: no cover - a build without a C compiler
        pass
