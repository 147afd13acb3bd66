"""The command line as a user runs it: ``python -m streams`` in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support import REPO, assert_one_error_line

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        cwd=REPO,
    )


def test_unreachable_broker_fails_fast_in_one_line() -> None:
    started = time.monotonic()
    result = cli("topics", "create", "--bootstrap", "127.0.0.1:1")
    elapsed = time.monotonic() - started
    line = assert_one_error_line(result.returncode, result.stderr, "127.0.0.1:1")
    assert "unreachable" in line
    assert "--bootstrap" in line and "FRAUD_BOOTSTRAP_SERVERS" in line
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert result.stdout == ""
