"""Pseudonymisation of card ids in what the system writes out (decisions, logs).

With ``FRAUD_PSEUDONYMIZE_KEY`` set, a card id becomes the first 16 hex characters of
HMAC-SHA256(key, card id): the same card always gets the same pseudonym (so per-card analysis
still works downstream), and without the key the id cannot be recovered or confirmed by hashing
guesses. Without a key the ``Pseudonymizer`` leaves ids as they are.

Only outputs are pseudonymised: the workers keep real ids in their state, because features are
keyed by card and labels arrive with real ids.

>>> pseudonymize("4242", "k")
'ed06005aee58355b'
>>> Pseudonymizer(None)("4242"), Pseudonymizer("k")("4242")
('4242', 'ed06005aee58355b')
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from pydantic import SecretStr

DIGEST_HEX_CHARS = 16


def _key_bytes(key: str | bytes | SecretStr) -> bytes:
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def pseudonymize(card_id: object, key: str | bytes | SecretStr) -> str:
    """The keyed pseudonym of ``card_id`` (its ``str`` form): 16 lowercase hex characters."""
    raw = _key_bytes(key)
    if not raw:
        raise ValueError("a pseudonymisation key must not be empty")
    digest = hmac.new(raw, str(card_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:DIGEST_HEX_CHARS]


class Pseudonymizer:
    """``p(card_id)``: the pseudonym with a key, ``str(card_id)`` unchanged without one.

    Build one per process from the settings: ``Pseudonymizer(settings.pseudonymize_key)``.
    Results are cached (cards recur), bounded to ``cache_size`` ids.
    """

    def __init__(self, key: str | bytes | SecretStr | None, cache_size: int = 65_536):
        raw = _key_bytes(key) if key is not None else b""
        self.enabled = bool(raw)
        self._key = raw
        self._cached = functools.lru_cache(maxsize=cache_size)(self._compute)

    def _compute(self, card_id: str) -> str:
        return pseudonymize(card_id, self._key)

    def __call__(self, card_id: object) -> str:
        text = str(card_id)
        return self._cached(text) if self.enabled else text

    def __repr__(self) -> str:  # never shows the key
        return f"Pseudonymizer(enabled={self.enabled})"
