"""kill -9 of both stages, repeatedly, under load, with labels and poisoned messages flowing
(``streams.crashtest``): no transaction may end without a decision, a transaction decided twice
gets byte-identical decisions, and each poisoned message ends in exactly one dead-letter
position. Stage 1 checkpoints every second, so restarted workers restore their
partitions from checkpoints (and the records after them) as well as from the full history.
Run on the integration broker (Apache Kafka where Java 17+ is present) and on the embedded
broker, the zero-setup default."""

from __future__ import annotations

import json
import os

import pytest

from streams.crashtest.runner import CrashTest, Outcome, Plan
from streams.settings import load_settings
from tests.support import REPO, Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("FRAUD_TEST_KILLS", "4"))


def _crash(
    broker: Broker, tmp_path, settings_update: dict | None = None, **plan: object
) -> tuple[Outcome, dict]:
    """A crash test of ~70k transactions (about 50 s of traffic) with labels and poison."""
    settings = load_settings(
        **(settings_update or {}),
        bootstrap_servers=broker.bootstrap,
        partitions=4,
        rules_dir=REPO / "rules",
        model_dir=REPO / "models" / "default",
        policy_file=REPO / "config" / "policy.yaml",
        stage1_checkpoint_interval_s=1.0,
    )
    defaults: dict = {
        "customers": 500,
        "days": 75,
        "rate": 1500.0,
        "labels": True,
        "poison": 7,
        "kills_stage1": KILLS,
        "kills_stage2": KILLS,
        "min_gap_s": 0.5,
        "max_gap_s": 2.5,
    }
    outcome = CrashTest(settings, Plan(**{**defaults, **plan}), log_dir=tmp_path).run()
    logs = [p.read_text(errors="replace") for p in sorted(tmp_path.glob("stage1-*.log"))]
    restored = sum(log.count("state restored from checkpoint") for log in logs)
    report = {"broker": broker.kind, **outcome.as_dict(), "partitions_restored": restored}
    print(f"\ncrash test on {broker.kind}: {json.dumps(report)[:3000]}")
    if not outcome.verdict.ok or not restored or outcome.exited:
        _print_digest(tmp_path)
    assert len(outcome.kills) >= 4, f"the traffic ended before the kills: {report}"
    assert not outcome.exited, (outcome.exited, outcome.logs)
    assert outcome.verdict.lost == 0, (report, outcome.logs)
    assert outcome.verdict.dead_letters == outcome.verdict.poison_sent, report
    assert restored > 0, "no restart restored a partition from a checkpoint"
    return outcome, report


NOTABLE = ("WARNING", "ERROR", "assigned", "recovery took", "restored from", "rebuilt from")


def _print_digest(log_dir) -> None:
    """What each worker incarnation did, so that a failed run in CI explains itself: its
    notable log lines and its last ones."""
    for path in sorted(log_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        notable = [ln for ln in lines if any(k in ln for k in NOTABLE)]
        print(f"\n--- {path.name}: {len(lines)} lines; notable (last 40):")
        print("\n".join(ln[:300] for ln in notable[-40:]))
        print(f"--- {path.name}: last 8 lines:")
        print("\n".join(ln[:300] for ln in lines[-8:]))


def _run(broker: Broker, tmp_path, seed: int, stage1_workers: int) -> dict:
    outcome, report = _crash(broker, tmp_path, seed=seed, stage1_workers=stage1_workers)
    verdict = outcome.verdict
    assert any(name == "stage2" for _, name in outcome.kills), report
    assert verdict.conflicting == 0, report
    assert verdict.differing_bytes == 0, report  # which fields: report["differing_fields"]
    assert verdict.duplicates > 0, "no kill landed while records were in flight"
    return report


def test_kill_9_both_stages_with_labels_flowing(kafka_broker, tmp_path, capsys) -> None:
    with capsys.disabled():
        _run(kafka_broker, tmp_path, seed=31, stage1_workers=2)


def test_kill_9_both_stages_on_the_embedded_broker(embedded_broker, tmp_path, capsys) -> None:
    with capsys.disabled():
        _run(embedded_broker, tmp_path, seed=32, stage1_workers=1)


def _exactly_once(broker: Broker, tmp_path, capsys, **plan: object) -> tuple[Outcome, dict]:
    """A crash test with stage 1 in ``--exactly-once`` (and ``plan``) on Apache Kafka: a
    ``read_committed`` reader must see every transaction decided once and each poisoned message
    dead-lettered once."""
    if broker.kind != "kafka":
        pytest.skip("exactly-once needs Apache Kafka (Tansu returns no aborted transactions)")
    with capsys.disabled():
        outcome, report = _crash(broker, tmp_path, stage1_workers=2, exactly_once=True, **plan)
    assert outcome.verdict.duplicates == 0, report
    assert outcome.verdict.dead_letter_copies == 0, report
    return outcome, report


def test_kill_9_exactly_once_stage1_on_apache_kafka(kafka_broker, tmp_path, capsys) -> None:
    """``--exactly-once`` stage-1 workers killed -9 while transactions and labels flow (stage 2
    left running): a ``read_committed`` reader sees every transaction decided exactly once and
    each poisoned message dead-lettered exactly once."""
    outcome, report = _exactly_once(
        kafka_broker, tmp_path, capsys, seed=33, kills_stage1=2 * KILLS, kills_stage2=0
    )
    assert all(name.startswith("stage1") for _, name in outcome.kills), report


def test_kill_9_exactly_once_both_stages_on_apache_kafka(kafka_broker, tmp_path, capsys) -> None:
    """Both stages in Kafka transactions (stage 1 ``--exactly-once``, stage 2 in faust's
    exactly-once mode, ``streams.stage2.exactly_once``), both killed -9 while transactions and
    labels flow: a ``read_committed`` reader sees every transaction decided exactly once and
    each poisoned message dead-lettered exactly once."""
    outcome, report = _exactly_once(
        kafka_broker,
        tmp_path,
        capsys,
        seed=34,
        stage2_exactly_once=True,
        # a commit every 50 ms instead of faust's 2.8 s: many more commits, seeks and restarts
        # meet in flight, so a rare race shows in this run (the stale records of
        # ``faust_commit`` 7. made duplicates in 3 of 7 such runs, 1 in 18 at 2.8 s)
        settings_update={"stage2_commit_interval_s": 0.05},
    )
    assert any(name == "stage2" for _, name in outcome.kills), report
