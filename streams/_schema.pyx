# cython: language_level=3, boundscheck=False, wraparound=False
"""The transaction gate's usual case, compiled: ``validate`` of a JSON object with string ids,
a float amount and a canonical UTC time (``YYYY-MM-DDTHH:MM:SS.fffZ``, what the producers here
write), and ``decode`` around it.

``streams/schema.py`` is the reference: anything else (integer ids or amounts, another time
shape, a missing field, a bad value) goes to its ``_validate``, which accepts it or names what
is wrong. Where this code accepts a transaction, it gives the same one
(``tests/unit/test_schema_compiled.py`` compares both on valid and broken inputs).
"""

import orjson

from streams.errors import DecodeError
import streams.schema as _reference
from streams.schema import MAX_AMOUNT, Transaction

cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)

cdef long long DAY_MS = 86_400_000
cdef long long MAX_TS_MS = 7_258_118_400_000  # 2200-01-01, as ``schema._MAX_TS_MS``
cdef double MAX_AMT = MAX_AMOUNT
cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _Transaction = Transaction


cdef inline int digits(const unsigned char* s, int n) noexcept:
    """The ``n`` ASCII digits at ``s`` as a number, or -1."""
    cdef int value = 0, i
    cdef unsigned char ch
    for i in range(n):
        ch = s[i]
        if ch < 48 or ch > 57:
            return -1
        value = value * 10 + (ch - 48)
    return value


cdef inline long long days_from_civil(long long y, int m, int d) noexcept:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    cdef long long era = (y if y >= 0 else y - 399) // 400
    cdef long long yoe = y - era * 400
    cdef long long doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int month_days(int y, int m) noexcept:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m == 4 or m == 6 or m == 9 or m == 11 else 31


cdef long long canonical_ms(str text):
    """Epoch ms of ``YYYY-MM-DDTHH:MM:SS.fffZ``, or -1 for any other shape or an invalid or
    out-of-range time (the reference then decides)."""
    if PyUnicode_GET_LENGTH(text) != 24 or not PyUnicode_IS_ASCII(text):
        return -1
    cdef const unsigned char* s = <const unsigned char*>PyUnicode_DATA(text)
    if (s[4] != 45 or s[7] != 45 or s[10] != 84 or s[13] != 58 or s[16] != 58
            or s[19] != 46 or s[23] != 90):  # - - T : : . Z
        return -1
    cdef int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2)
    cdef int hour = digits(s + 11, 2), minute = digits(s + 14, 2)
    cdef int sec = digits(s + 17, 2), milli = digits(s + 20, 3)
    if y < 1 or m < 1 or m > 12 or d < 1 or hour < 0 or minute < 0 or sec < 0 or milli < 0:
        return -1
    if d > month_days(y, m) or hour >= 24 or minute >= 60 or sec * 1000 + milli >= 60000:
        return -1
    cdef long long base = days_from_civil(y, m, d) * DAY_MS
    if base < 0 or base >= MAX_TS_MS:
        return -1
    cdef long long ms = base + (hour * 60 + minute) * 60_000 + sec * 1000 + milli
    return ms if ms < MAX_TS_MS else -1


def validate(obj):
    """``schema.validate``: a decoded JSON value to a Transaction, or ValidationError."""
    cdef long long ts_ms
    cdef double amount
    if type(obj) is dict:
        d = <dict>obj
        tid = d.get("transaction_id")
        card = d.get("card_id")
        terminal = d.get("terminal_id")
        value = d.get("amount")
        when = d.get("timestamp")
        if (
            type(tid) is str
            and type(card) is str
            and type(terminal) is str
            and type(value) is float
            and type(when) is str
            and 0 < PyUnicode_GET_LENGTH(tid) <= 128
            and 0 < PyUnicode_GET_LENGTH(card) <= 128
            and 0 < PyUnicode_GET_LENGTH(terminal) <= 128
        ):
            amount = value
            if 0.0 <= amount <= MAX_AMT:  # False for NaN and infinities too
                ts_ms = canonical_ms(when)
                if ts_ms >= 0:
                    return _Transaction(tid, card, terminal, amount, ts_ms, obj)
    return _reference._validate(obj)


def decode(value):
    """``schema.decode``: Kafka message bytes to a Transaction; DecodeError or
    ValidationError otherwise."""
    if value is None:
        raise DecodeError("message has no value (tombstone)")
    try:
        obj = _loads(value)
    except _JSONDecodeError as exc:
        raise DecodeError(f"not valid UTF-8 JSON: {exc}") from None
    return validate(obj)
