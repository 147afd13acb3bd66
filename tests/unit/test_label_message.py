"""The label message: what ``produce`` writes is what stage 1 reads, and a label without the
optional card and amount (an older producer) still decodes; a broken one is refused."""

from __future__ import annotations

import pytest

from streams.data.produce import label_value
from streams.errors import MessageError
from streams.stage1.labels import decode_label

TS = 1_522_540_800_000


def test_a_produced_label_decodes_to_its_fields() -> None:
    value = label_value("tx1", "card7", "term3", TS, 1, 123.45)
    assert decode_label(value) == ("tx1", "term3", TS, 1, "card7", 123.45)


def test_card_and_amount_are_optional() -> None:
    value = b'{"transaction_id": "tx1", "terminal_id": "t", "timestamp": %d, "fraud": 0}' % TS
    assert decode_label(value) == ("tx1", "t", TS, 0, "", 0.0)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"transaction_id": "x", "terminal_id": "t", "timestamp": 1}', "fraud"),
        (
            b'{"transaction_id": "x", "terminal_id": "t", "timestamp": 1, "fraud": 1, '
            b'"amount": "lots"}',
            "could not convert",
        ),
        (
            b'{"transaction_id": "x", "terminal_id": "t", "timestamp": 1, "fraud": 1, '
            b'"amount": 1e999}',
            "infinity",
        ),
        (b"not json", "bad label"),
        (b"[1, 2]", "bad label"),
    ],
)
def test_a_broken_label_is_refused_with_its_reason(value: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_label(value)
