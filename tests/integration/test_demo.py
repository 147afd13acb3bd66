"""``fraudstream demo``, the first quick-start command, run as a user runs it: a process with no
broker given, so it starts the embedded Tansu broker itself, both workers, the traffic with its
malformed messages, and prints the summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.demo import MALFORMED

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRANSACTIONS = 2000


def _demo(cwd: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env["FRAUD_DEMO_LOGS"] = str(tmp_path / "logs")
    cmd = [sys.executable, "-m", "streams", "demo", "--transactions", str(TRANSACTIONS), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=400)


def test_demo_decides_every_transaction_once(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    done = _demo(REPO, tmp_path, "--rate", "0", "--summary-json", str(summary))
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert b"fraudstream demo summary" in done.stdout
    got = orjson.loads(summary.read_bytes())
    assert got["transactions"] == TRANSACTIONS
    assert got["decisions"] == TRANSACTIONS
    assert got["duplicate_decisions"] == 0
    assert got["dead_letters"] == len(MALFORMED)
    assert sum(got["actions"].values()) == TRANSACTIONS
    assert 0 < got["flagged"] < TRANSACTIONS
    assert got["latency_ms"]["p50"] > 0


def test_demo_outside_the_project_says_which_directory_is_missing(tmp_path: Path) -> None:
    """The shipped rules and model are relative paths: from another directory the demo stops
    with one line naming the worker, the missing directory, the setting and the log."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _demo(elsewhere, tmp_path)
    err = done.stderr.decode(errors="replace")
    assert done.returncode != 0
    line = err.strip().splitlines()[-1]
    assert "exited with code" in line, err[-3000:]
    assert ("FRAUD_RULES_DIR" in line) or ("FRAUD_MODEL_DIR" in line), line
    assert str(elsewhere) in line
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert (log if log.is_absolute() else elsewhere / log).is_file()
