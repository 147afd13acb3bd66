"""Stage-2 transient failures (forced with the FRAUD_FAULT_INJECT test hook): retry topics with
growing delays, the dead-letter topic after the last attempt, and a redrive after the cause is
fixed that decides every dead letter exactly once, however often it is run."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from streams.data.produce import produce_history
from streams.kafka.dlq import header_dict
from streams.kafka.topics import create_topics
from streams.process import worker_env
from streams.recovery.redrive import RedriveFilter, redrive
from tests.integration.helpers import read_topic, stage1_thread
from tests.integration.recovery_support import (
    Tail,
    Worker,
    by_transaction,
    history,
    ids,
    recovery_settings,
    reference,
)

pytestmark = pytest.mark.integration


def _redrive(settings, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "redrive", "--topic", *args],
        env=worker_env(settings),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return orjson.loads(out.stdout)[0]


@pytest.mark.timeout(240)
def test_dead_letters_are_redriven_once_after_the_fix(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(kafka_broker)
    create_topics(settings)
    df = history(customers=60, days=12, seed=52)
    produce_history(df, settings)
    always = {"FRAUD_FAULT_INJECT": "stage2-transient"}
    with Tail(settings, [settings.topic_decisions]) as tail:
        # 1. scoring always fails: every flagged record ends in the DLQ after 3 attempts
        with stage1_thread(settings) as worker:
            with Worker("stage2", settings, tmp_path, **always):
                dead = read_topic(settings, settings.topic_flagged_dlq, 1, 120, idle_s=1)
                while len(dead) < worker.stats.flagged or worker.stats.flagged == 0:
                    dead = read_topic(settings, settings.topic_flagged_dlq, len(dead) + 1, 60, 1)
            flagged = worker.stats.flagged
        assert len(dead) == flagged
        h = header_dict(dead[0].headers())
        assert h["dlq.error.kind"] == "transient" and h["dlq.attempts"] == "3"
        assert h["dlq.source.topic"] == settings.topic_flagged
        assert int(h["dlq.last.failure.ms"]) >= int(h["dlq.first.failure.ms"]) + 3000  # 1 s + 2 s
        assert not any(k.startswith("retry.") for k in h)
        approved = len(tail.values(settings.topic_decisions))
        assert approved == len(ids(df)) - flagged

        # 2. the cause fixed (no fault), redrive: every dead letter decided once
        with Worker("stage2", settings, tmp_path):
            dlq = settings.topic_flagged_dlq
            dry = redrive(settings, dlq, dry_run=True)
            assert dry.matched == flagged and dry.sent == 0
            assert redrive(settings, dlq, RedriveFilter(kinds=frozenset({"decode"}))).matched == 0
            first = _redrive(settings, dlq, "--error", "transient")  # the command
            assert first["sent"] == flagged and first["already_redriven"] == 0
            missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=120)
            assert not missing, f"{len(missing)} dead letters not decided after the redrive"
            again = redrive(settings, dlq)
            assert again.sent == 0 and again.already_redriven == flagged
            tail.wait_decided(settings.topic_decisions, {"never"}, timeout_s=2)  # extras?
        values = tail.values(settings.topic_decisions)
    decided = by_transaction(values)
    assert set(decided) == ids(df)
    assert len(values) == len(decided), "a redriven dead letter was decided twice"
    ref = reference(settings)
    assert all(orjson.loads(v[0]) == ref[t] for t, v in decided.items())
    with capsys.disabled():
        print(
            f"\nredrive: {flagged} flagged -> {len(dead)} dead letters (3 attempts each); "
            f"redrive sent {first['sent']}, a second redrive sent {again.sent}; "
            f"{len(values)} decisions for {len(decided)} transactions"
        )
