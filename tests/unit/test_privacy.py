"""Pseudonymisation of card ids: keyed HMAC-SHA256, 16 hex characters, a no-op without a key."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from streams.privacy import Pseudonymizer, pseudonymize
from streams.settings import load_settings


def test_known_value() -> None:
    expected = hmac.new(b"k", b"4242", hashlib.sha256).hexdigest()[:16]
    assert pseudonymize("4242", "k") == expected == "ed06005aee58355b"


def test_shape_and_stability() -> None:
    p = pseudonymize(123, "key")
    assert len(p) == 16
    assert all(c in "0123456789abcdef" for c in p)
    assert pseudonymize("123", "key") == p  # ids are hashed in their str form
    assert pseudonymize(123, b"key") == p
    assert pseudonymize(123, SecretStr("key")) == p


def test_the_key_matters_and_ids_do_not_collide() -> None:
    assert pseudonymize("1", "a") != pseudonymize("1", "b")
    pseudonyms = {pseudonymize(i, "a") for i in range(20_000)}
    assert len(pseudonyms) == 20_000


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError):
        pseudonymize("1", "")


def test_pseudonymizer_without_key_is_a_no_op() -> None:
    for key in (None, "", SecretStr("")):
        p = Pseudonymizer(key)
        assert not p.enabled
        assert p("4242") == "4242"
        assert p(4242) == "4242"


def test_pseudonymizer_with_key() -> None:
    p = Pseudonymizer(SecretStr("k"))
    assert p.enabled
    assert p("4242") == p(4242) == pseudonymize("4242", "k")
    assert "k" not in repr(p).replace("Pseudonymizer", "").replace("enabled", "")


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUD_PSEUDONYMIZE_KEY", raising=False)
    assert not Pseudonymizer(load_settings().pseudonymize_key).enabled
    monkeypatch.setenv("FRAUD_PSEUDONYMIZE_KEY", "k")
    p = Pseudonymizer(load_settings().pseudonymize_key)
    assert p("4242") == "ed06005aee58355b"
