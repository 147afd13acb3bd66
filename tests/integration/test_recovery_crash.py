"""kill -9 of stage-1 workers while transactions flow, on a real broker.

What is guaranteed, and so asserted: every transaction ends with a decision; a transaction
decided more than once (at-least-once redelivery after a crash) has byte-identical decisions; and
every decision equals the one of an uninterrupted in-process run of the same code over the same
topic (the replay engine without a range). This holds because each partition's stage-1 state is
rebuilt from the topic before the partition is processed, stage 2 remembers the card context it
gave each transaction, and decisions hold no wall-clock value. This traffic carries no labels, so
the comparison with the replay is exact by construction; ``test_crash_kills.py`` kills both
stages with labels flowing.
"""

from __future__ import annotations

import os
import random
import time

import orjson
import pytest

from streams.kafka.topics import create_topics
from tests.integration.recovery_support import (
    Tail,
    Worker,
    by_transaction,
    history,
    ids,
    recovery_settings,
    reference,
    traffic,
)

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("FRAUD_TEST_KILLS", "3"))


def _kill_repeatedly(
    worker: Worker, tail: Tail, settings, kills: int, rng: random.Random, flow
) -> list[int]:
    """Once the (started) worker has written fresh stage-1 output, kill -9 at a random moment,
    then restart it; up to ``kills`` times while the traffic (``flow``, a thread) lasts. Returns
    the number of stage-1 outputs seen at each kill."""
    at: list[int] = []
    for i in range(kills):
        if not flow.is_alive():
            break
        if i:
            worker.start().wait_log("assigned")
        before = tail.stage1_outputs(settings)
        deadline = time.monotonic() + 20
        while tail.stage1_outputs(settings) < before + 100 and time.monotonic() < deadline:
            assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.7))
        worker.kill()
        at.append(tail.stage1_outputs(settings))
    return at


def _check(settings, tail, df, report) -> None:
    expected = ids(df)
    values = tail.values(settings.topic_decisions)
    decided = by_transaction(values)
    assert set(decided) == expected, f"{len(expected - set(decided))} transactions undecided"
    differing = {tid: vs for tid, vs in decided.items() if len(set(vs)) > 1}
    assert not differing, f"duplicates with different content: {list(differing.items())[:2]}"
    duplicates = sum(len(vs) - 1 for vs in decided.values())
    ref = reference(settings)
    unequal = [tid for tid, vs in decided.items() if orjson.loads(vs[0]) != ref[tid]]
    assert not unequal, (
        f"{len(unequal)} decisions differ from an uninterrupted run, e.g. "
        f"{orjson.loads(decided[unequal[0]][0])} != {ref[unequal[0]]}"
    )
    report.update(
        transactions=len(expected),
        decisions=len(values),
        duplicates=duplicates,
        stage2=sum(1 for v in values if b'"stage":2' in v),
    )


@pytest.mark.timeout(240)
def test_kill_9_at_least_once(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(kafka_broker, partitions=4)
    create_topics(settings)
    df = history(customers=300, days=24, seed=21)  # ~13k, 17 s of traffic
    rng = random.Random(5)
    outputs = [settings.topic_decisions, settings.topic_flagged, settings.topic_transactions]
    report: dict[str, object] = {}
    stage1 = Worker("stage1", settings, tmp_path)
    with Tail(settings, outputs) as tail, Worker("stage2", settings, tmp_path) as stage2:
        # the first start is a cold one, before the traffic: on a slow machine it took most of
        # the traffic, which then ended before the second kill
        stage1.start().wait_log("assigned")
        with traffic(settings, df, rate=800) as flow:
            report["kills_at_outputs"] = kills = _kill_repeatedly(
                stage1, tail, settings, KILLS, rng, flow
            )
            assert len(kills) >= 2, "the traffic ended before the kills"
            stage1.start().wait_log("assigned")
            missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=120)
            assert not missing, tail.where_undecided(missing, settings, stage1, stage2)
            time.sleep(1.0)  # let any late duplicate arrive before judging
            assert stage1.stop() == 0, stage1.log()[-3000:]
            assert stage2.proc is not None and stage2.proc.poll() is None, stage2.log()[-3000:]
    _check(settings, tail, df, report)
    report["flagged_records"] = tail.count(settings.topic_flagged)
    with capsys.disabled():
        print(f"\nkill -9 at-least-once: {report}")


@pytest.mark.timeout(240)
def test_kill_9_exactly_once(kafka_broker, tmp_path, capsys):
    """The same with ``--exactly-once``: one transaction per batch (outputs + offsets), readers
    ``read_committed``. On Kafka, stage 1's outputs then appear exactly once. The embedded broker
    returns no aborted-transaction list, so its read_committed readers also see the outputs of
    transactions the crash left open (aborted when the restarted worker, same transactional id,
    initialises): duplicates there, still byte-identical, are counted, not forbidden."""
    settings = recovery_settings(kafka_broker, partitions=4, exactly_once=True)
    create_topics(settings)
    df = history(customers=250, days=24, seed=22)  # ~11.4k, 14 s of traffic
    rng = random.Random(6)
    outputs = [settings.topic_decisions, settings.topic_flagged, settings.topic_transactions]
    report: dict[str, object] = {"broker": kafka_broker.kind}
    stage1 = Worker(
        "stage1", settings, tmp_path, FRAUD_TRANSACTIONAL_ID=f"{settings.stage1_group}-a"
    )
    with Tail(settings, outputs) as tail, Worker("stage2", settings, tmp_path) as stage2:
        # the first start is a cold one, before the traffic: on a slow machine it took most of
        # the traffic, which then ended before the second kill
        stage1.start().wait_log("assigned")
        with traffic(settings, df, rate=800) as flow:
            report["kills_at_outputs"] = _kill_repeatedly(
                stage1, tail, settings, max(KILLS - 1, 1), rng, flow
            )
            stage1.start().wait_log("assigned")
            missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=120)
            assert not missing, tail.where_undecided(missing, settings, stage1, stage2)
            time.sleep(1.0)
            assert stage1.stop() == 0, stage1.log()[-3000:]
            assert stage2.proc is not None and stage2.proc.poll() is None, stage2.log()[-3000:]
    _check(settings, tail, df, report)
    flagged = by_transaction(tail.values(settings.topic_flagged))
    stage1_decisions = by_transaction(
        [v for v in tail.values(settings.topic_decisions) if b'"stage":1,' in v]
    )
    stage1_dups = sum(len(v) - 1 for v in flagged.values()) + sum(
        len(v) - 1 for v in stage1_decisions.values()
    )
    report["stage1_duplicates"] = stage1_dups
    with capsys.disabled():
        print(f"\nkill -9 exactly-once: {report}")
    if kafka_broker.kind != "embedded":
        assert stage1_dups == 0, "exactly-once: stage 1 wrote an output twice"
