"""The stage-2 test hook: ``FRAUD_FAULT_INJECT=stage2-transient[:N]`` makes scoring fail as a
transient error on attempts below N (every attempt without N), to exercise the retry topics and
the dead-letter path. Only tests set it; the app reads it once, when it is built."""

from __future__ import annotations

import os

FAULT_ENV = "FRAUD_FAULT_INJECT"


def injected_fault_attempts(value: str | None = None) -> int | None:
    """Attempts that fail under ``FRAUD_FAULT_INJECT=stage2-transient[:N]``; None = no fault.

    >>> injected_fault_attempts("stage2-transient:1"), injected_fault_attempts("")
    (1, None)
    """
    text = os.environ.get(FAULT_ENV, "") if value is None else value
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        if name == "stage2-transient":
            return int(count) if count else 1_000_000
    return None


def check_fault(fault: int | None, attempt: int) -> None:
    """Raise the injected transient fault when ``attempt`` is below ``fault``."""
    if fault is not None and attempt < fault:
        raise RuntimeError(f"injected transient fault ({FAULT_ENV}), attempt {attempt}")
