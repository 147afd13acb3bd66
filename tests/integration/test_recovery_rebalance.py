"""Two stage-1 workers in one group, one killed mid-run: the survivor takes its partitions,
rebuilds their state from the topic up to the committed offsets, and every decision equals the
one of a single uninterrupted run (duplicates byte-identical)."""

from __future__ import annotations

import random
import re
import time

import orjson
import pytest
from confluent_kafka import TopicPartition

from streams.kafka import clients
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


def _committed(settings, partitions: list[int]) -> bool:
    """Every one of ``partitions`` has a committed offset (so a takeover has state to rebuild)."""
    consumer = clients.consumer(settings, settings.stage1_group)
    try:
        tps = [TopicPartition(settings.topic_transactions, p) for p in partitions]
        return all(tp.offset > 0 for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


@pytest.mark.timeout(180)
def test_survivor_takes_over_with_rebuilt_state(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(kafka_broker, partitions=4)
    create_topics(settings)
    df = history(customers=200, days=20, seed=31)  # ~7.6k
    outputs = [settings.topic_decisions, settings.topic_flagged, settings.topic_transactions]
    survivor = Worker("stage1", settings, tmp_path)
    victim = Worker("stage1", settings, tmp_path)
    with Tail(settings, outputs) as tail, Worker("stage2", settings, tmp_path) as stage2:
        survivor.start()
        victim.start()
        survivor.wait_log("assigned ['")
        victim.wait_log("assigned ['")  # two partitions each
        held = victim.log().split("assigned ['", 1)[1]
        victim_parts = [int(p) for p in re.findall(r"transactions\[(\d)\]", held)]
        with traffic(settings, df, rate=1500):
            while tail.stage1_outputs(settings) < 2000 or not _committed(settings, victim_parts):
                time.sleep(0.1)
            time.sleep(random.Random(8).uniform(0.0, 1.0))
            victim.kill()
            killed_at = tail.stage1_outputs(settings)
        missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=90)
        assert not missing, tail.where_undecided(missing, settings, survivor, victim, stage2)
        # On a loaded machine the victim may have screened all its traffic before the kill; the
        # takeover still comes once its session expires, and it must rebuild the state.
        survivor.wait_log(f"transactions[{victim_parts[0]}]@None: state rebuilt", timeout_s=60)
        time.sleep(1.0)
        assert survivor.stop() == 0, survivor.log()[-3000:]
        assert stage2.proc is not None and stage2.proc.poll() is None, stage2.log()[-3000:]

    log = survivor.log()
    rebuilt = {
        int(p): int(n)
        for p, n in re.findall(r"transactions\[(\d)\]@None: state rebuilt from (\d+)", log)
    }
    taken_over = {p: n for p, n in rebuilt.items() if p in victim_parts and n > 0}
    assert taken_over, f"the survivor rebuilt no partition of the victim:\n{log[-3000:]}"

    values = tail.values(settings.topic_decisions)
    decided = by_transaction(values)
    assert set(decided) == ids(df)
    assert all(len(set(vs)) == 1 for vs in decided.values()), "duplicates differ"
    ref = reference(settings)
    unequal = [t for t, vs in decided.items() if orjson.loads(vs[0]) != ref[t]]
    assert not unequal, f"{len(unequal)} decisions differ from an uninterrupted run"
    with capsys.disabled():
        print(
            f"\nrebalance: {len(decided)} transactions, {len(values)} decisions "
            f"({len(values) - len(decided)} duplicates, identical), victim killed at "
            f"{killed_at} stage-1 outputs, survivor rebuilt {taken_over} (partition: records)"
        )
