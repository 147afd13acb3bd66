"""Card ids in stage-1 outputs follow FRAUD_PSEUDONYMIZE_KEY; features still use the real id."""

from __future__ import annotations

from pathlib import Path

from streams.privacy import pseudonymize
from streams.rules.loader import load_rules
from streams.schema import Transaction
from streams.settings import load_settings
from streams.stage1.screen import Screener

RULES = Path(__file__).resolve().parents[2] / "rules"


def _batch(key: str | None):
    settings = load_settings(pseudonymize_key=key) if key else load_settings()
    screener = Screener.from_settings(settings, load_rules(RULES))
    txs = [
        Transaction(str(i), "card-42", "t1", 10.0 + i, 1_522_540_831_000 + i, {}) for i in range(3)
    ]
    return screener, screener.screen(txs)


def test_outputs_carry_the_pseudonym_when_a_key_is_set():
    screener, out = _batch("secret-key")
    expected = pseudonymize("card-42", b"secret-key")
    assert out.decision(0)["card_id"] == expected
    assert out.flagged_record(1)["card_id"] == expected
    assert "card-42" in screener.engine.cards  # state keyed by the real id


def test_outputs_keep_the_card_id_without_a_key():
    _, out = _batch(None)
    assert out.decision(0)["card_id"] == "card-42"
