"""The compiled transaction gate (``streams/_schema.pyx``) against its reference in
``streams/schema.py``: the same Transaction for every input the reference accepts, the same
error class and message for every one it refuses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams import schema
from streams.errors import MessageError

pytestmark = pytest.mark.skipif(
    not schema.COMPILED, reason="the package was built without its compiled transaction gate"
)
reference_decode, reference_validate = schema.REFERENCE


def outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    try:
        tx = fn(arg)
    except MessageError as exc:
        return type(exc).__name__, str(exc)
    return "ok", (tx.transaction_id, tx.card_id, tx.terminal_id, tx.amount, tx.ts_ms, tx.raw)


def canonical(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def times(rng: random.Random) -> list[Any]:
    start = datetime(1969, 12, 31, 23, 59, tzinfo=UTC)
    good = [canonical(start + timedelta(milliseconds=rng.randrange(2**43))) for _ in range(300)]
    edges = [
        "1970-01-01T00:00:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "2199-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00.000Z",
        "2020-02-29T12:00:00.000Z",
        "2019-02-29T12:00:00.000Z",
        "2100-02-29T12:00:00.000Z",
        "2000-02-29T12:00:00.000Z",
        "2018-04-31T00:00:00.000Z",
        "2018-13-01T00:00:00.000Z",
        "2018-00-10T00:00:00.000Z",
        "2018-04-00T00:00:00.000Z",
        "2018-04-01T24:00:00.000Z",
        "2018-04-01T23:60:00.000Z",
        "2018-04-01T23:59:60.000Z",
        "2018-04-01T23:59:59.999z",
        "2018-04-01 23:59:59.999Z",
        "2018-04-01T23:59:59.99Z",
        "2018-04-01T23:59:59Z",
        "2018-04-01T23:59:59.999+00:00",
        "2018-04-01T2a:59:59.999Z",
        "2018-04-01T23:59:59.9٩9Z",
        "２018-04-01T23:59:59.999Z",
        "0000-01-01T00:00:00.000Z",
        " 2018-04-01T00:00:31.000Z",
        "2018-04-01T00:00:31",
        1522540831000,
        1522540831000.5,
        None,
        True,
    ]
    # single-character damage to good times
    for text in good[:60]:
        i = rng.randrange(len(text))
        edges.append(text[:i] + rng.choice("0x9:-.TZ ") + text[i + 1 :])
    return good + edges


def test_the_compiled_gate_gives_the_reference_result_for_every_input() -> None:
    rng = random.Random(3)
    base = {"transaction_id": "tx1", "card_id": "c1", "terminal_id": "t1", "amount": 12.5}
    objects: list[Any] = [{**base, "timestamp": when} for when in times(rng)]
    good = "2018-04-01T00:00:31.000Z"
    for name, bad in [
        ("transaction_id", ""),
        ("transaction_id", "x" * 129),
        ("transaction_id", "x" * 128),
        ("card_id", 17),
        ("card_id", True),
        ("terminal_id", None),
        ("amount", -0.01),
        ("amount", 0.0),
        ("amount", 1e9),
        ("amount", 1.0000001e9),
        ("amount", 12),
        ("amount", float("nan")),
        ("amount", float("inf")),
        ("amount", "12.5"),
        ("amount", False),
    ]:
        objects.append({**base, "timestamp": good, name: bad})
    full = {**base, "timestamp": good}
    objects += [{k: v for k, v in full.items() if k != drop} for drop in full]
    objects += [[1, 2], "text", 3, None, {**base, "timestamp": good, "extra": {"a": 1}}]
    accepted = 0
    for obj in objects:
        mine, theirs = outcome(schema.validate, obj), outcome(reference_validate, obj)
        assert mine == theirs, obj
        accepted += mine[0] == "ok"
    assert 200 < accepted < len(objects)  # both sides of the gate were exercised


def test_the_usual_case_never_reaches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(obj: Any) -> schema.Transaction:
        raise AssertionError(f"the reference was asked: {obj!r}")

    monkeypatch.setattr(schema, "_validate", refuse)
    obj = {
        "transaction_id": "t",
        "card_id": "c",
        "terminal_id": "x",
        "amount": 1.5,
        "timestamp": "2018-04-01T00:00:31.250Z",
    }
    assert schema.validate(obj).ts_ms == 1522540831250
    with pytest.raises(AssertionError, match="reference was asked"):
        schema.validate({**obj, "timestamp": 1522540831250})


def test_the_compiled_decode_gives_the_reference_result_for_every_input() -> None:
    good = {
        "transaction_id": "t",
        "card_id": "c",
        "terminal_id": "x",
        "amount": 1.5,
        "timestamp": "2018-04-01T00:00:31.000Z",
    }
    values: list[Any] = [orjson.dumps(good), None, b"", b"{", b"\xff\xfe", b"[]", b"null"]
    values.append(orjson.dumps({**good, "timestamp": "2018-04-01T00:00:31"}))
    for value in values:
        assert outcome(schema.decode, value) == outcome(reference_decode, value), value
