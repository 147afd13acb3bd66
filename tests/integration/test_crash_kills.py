"""kill -9 of both stages, repeatedly, under load, with labels and poisoned messages flowing
(``streams.crashtest``): no transaction may end without a decision, no transaction may get two
decisions that differ in action, stage or score, and each poisoned message ends in exactly one
dead-letter position. Run on the integration broker (Apache Kafka where Java 17+ is present)
and on the embedded broker, the zero-setup default."""

from __future__ import annotations

import json
import os

import pytest

from streams.crashtest.runner import CrashTest, Plan
from streams.settings import load_settings
from tests.conftest import REPO, Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("FRAUD_TEST_KILLS", "4"))


def _run(broker: Broker, tmp_path, seed: int, stage1_workers: int) -> dict:
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        partitions=4,
        rules_dir=REPO / "rules",
        model_dir=REPO / "models" / "default",
        policy_file=REPO / "config" / "policy.yaml",
    )
    plan = Plan(
        customers=500,
        days=75,
        seed=seed,
        rate=1500.0,  # ~70k transactions: about 50 s of traffic
        labels=True,
        poison=7,
        stage1_workers=stage1_workers,
        kills_stage1=KILLS,
        kills_stage2=KILLS,
        min_gap_s=0.5,
        max_gap_s=2.5,
    )
    outcome = CrashTest(settings, plan, log_dir=tmp_path).run()
    report = {"broker": broker.kind, **outcome.as_dict()}
    print(f"\ncrash test on {broker.kind}: {json.dumps(report)[:1500]}")
    verdict = outcome.verdict
    assert len(outcome.kills) >= 4, f"the traffic ended before the kills: {report}"
    assert any(name == "stage2" for _, name in outcome.kills), report
    assert not outcome.exited, (outcome.exited, outcome.logs)
    assert verdict.lost == 0, (report, outcome.logs)
    assert verdict.conflicting == 0, report
    assert verdict.dead_letters == verdict.poison_sent, report
    assert verdict.duplicates > 0, "no kill landed while records were in flight"
    return report


def test_kill_9_both_stages_with_labels_flowing(kafka_broker, tmp_path, capsys) -> None:
    with capsys.disabled():
        _run(kafka_broker, tmp_path, seed=31, stage1_workers=2)


def test_kill_9_both_stages_on_the_embedded_broker(embedded_broker, tmp_path, capsys) -> None:
    with capsys.disabled():
        _run(embedded_broker, tmp_path, seed=32, stage1_workers=1)
