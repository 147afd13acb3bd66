"""A stage-1 worker killed with ``kill -9`` while transactions and labels flow restarts from its
checkpoints: it loads each partition's latest checkpoint, resumes the labels from the offsets
saved with it and replays only the records after it. The source topic's and the labels topic's
records before the checkpoints are deleted first (DeleteRecords, as time retention would), and
every decision still equals the one of an uninterrupted run over the whole history, duplicates
byte-identical."""

from __future__ import annotations

import re
import time

import orjson
import pytest
from confluent_kafka import TopicPartition

from streams.checkpoint.codec import StateReader
from streams.checkpoint.topic import read_latest
from streams.data.produce import produce_history
from streams.kafka import clients
from streams.kafka.topics import create_topics, scoped
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

PARTITIONS = 2


def _checkpoints_past(settings, partitions: list[int], minimum: int):
    found, _ = read_latest(settings, partitions)
    if len(found) == len(partitions) and all(c.offset >= minimum for c in found.values()):
        return found
    return None


def _wait_committed_past_checkpoint(settings, deadline: float) -> None:
    """Until stage 1's group has committed, in some partition, past that partition's latest
    checkpoint (so a restart restores it and then replays records)."""
    parts = list(range(PARTITIONS))
    consumer = clients.consumer(settings, settings.stage1_group)  # reads offsets, never joins
    try:
        while True:
            latest, _ = read_latest(settings, parts)
            committed = consumer.committed(
                [TopicPartition(settings.topic_transactions, p) for p in parts], timeout=10
            )
            if any(tp.offset > latest[tp.partition].offset for tp in committed
                   if tp.partition in latest):  # fmt: skip
                return
            assert time.monotonic() < deadline, "no commit past a checkpoint"
            time.sleep(0.1)
    finally:
        consumer.close()


def _delete_before(settings, topic: str, offsets: dict[int, int]) -> dict[int, int]:
    """DeleteRecords below ``offsets``; the partitions' new low watermarks."""
    admin = clients.admin(settings)
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()])
    for future in futures.values():
        future.result(30)
    consumer = clients.consumer(settings, "low-watermarks")
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[0] for p in offsets}
    finally:
        consumer.close()


def _topic_config(settings, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = clients.admin(settings)  # kept alive until the answer comes
    result = admin.describe_configs([resource])[resource].result(30)
    return {name: entry.value for name, entry in result.items()}


def _labels_offsets(checkpoints) -> dict[int, int]:
    """The lowest labels offset any of ``checkpoints`` resumes from, per labels partition."""
    lowest: dict[int, int] = {}
    for checkpoint in checkpoints:
        for p, o in StateReader(checkpoint.labels).meta["labels"]["offsets"].items():
            lowest[int(p)] = min(lowest.get(int(p), int(o)), int(o))
    return {p: o for p, o in lowest.items() if o > 0}


@pytest.mark.timeout(300)
def test_restart_restores_checkpoints_after_the_history_is_deleted(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(
        kafka_broker, partitions=PARTITIONS, stage1_checkpoint_interval_s=3.0
    )
    create_topics(settings)
    df = history(customers=250, days=40, seed=41, labels=True)  # ~19k transactions
    assert "TX_FRAUD" in df.columns  # so the labels flow beside the transactions
    per_partition = len(df) // PARTITIONS
    outputs = [settings.topic_decisions]
    first = Worker("stage1", settings, tmp_path, name="first")
    second = Worker("stage1", settings, tmp_path, name="second")
    with Tail(settings, outputs) as tail, Worker("stage2", settings, tmp_path) as stage2:
        first.start()
        # the traffic starts once the worker holds its partitions: started with it, most of it
        # was a backlog the worker read in one go, past any checkpoint (a slow start-up)
        first.wait_log("recovery took", timeout_s=120)
        with traffic(settings, df, rate=1500):
            deadline = time.monotonic() + 120
            found = None
            while found is None:
                assert time.monotonic() < deadline, first.log()[-3000:]
                time.sleep(0.5)
                found = _checkpoints_past(settings, list(range(PARTITIONS)), per_partition // 3)
            # kill once a tail after a checkpoint is committed: a fixed 1.5 s left none when
            # a loaded machine let the worker reach the end of the traffic first
            _wait_committed_past_checkpoint(settings, deadline)
            first.kill()
            found, _ = read_latest(settings, list(range(PARTITIONS)))
            # what time retention would do: the history before the checkpoints is gone
            deleted = kafka_broker.kind == "kafka"
            if deleted:
                lows = _delete_before(
                    settings, settings.topic_transactions, {p: c.offset for p, c in found.items()}
                )
                assert all(lows[p] == found[p].offset > 0 for p in found), lows
                _delete_before(settings, settings.topic_labels, _labels_offsets(found.values()))
            second.start()
            missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=150)
        assert not missing, tail.where_undecided(missing, settings, first, second, stage2)
        second.wait_log("recovery took", timeout_s=30)
        assert second.stop() == 0, second.log()[-3000:]

    log = second.log()
    restored = {
        int(p): (int(at), int(n))
        for p, at, n in re.findall(
            r"transactions\[(\d)\]@None: state restored from checkpoint \d+ at offset (\d+) "
            r"\(\d+ bytes\), then (\d+) records replayed",
            log,
        )
    }
    assert set(restored) == set(range(PARTITIONS)), log[-3000:]
    assert "no checkpoint" not in log and "were deleted before" not in log, log[-3000:]
    assert any(n > 0 for _, n in restored.values()), f"no tail replayed: {restored}"

    # the uninterrupted run: the same data on topics of its own, replayed in one go
    ref_settings = scoped(settings, f"{settings.topic_transactions}-ref")
    create_topics(ref_settings)
    produce_history(df, ref_settings)
    ref = reference(ref_settings)
    decided = by_transaction(tail.values(settings.topic_decisions))
    assert set(decided) == ids(df)
    assert all(len(set(vs)) == 1 for vs in decided.values()), "duplicates differ"
    unequal = [t for t, vs in decided.items() if orjson.loads(vs[0]) != ref[t]]
    assert not unequal, f"{len(unequal)} of {len(decided)} decisions differ from the reference"
    if kafka_broker.kind == "kafka":  # the state topics are compacted, their restores bounded
        changelog = f"{settings.stage2_app_id}-stage2-card-context-changelog"
        for topic in (settings.topic_checkpoints, changelog):
            config = _topic_config(settings, topic)
            assert config["cleanup.policy"] == "compact", (topic, config["cleanup.policy"])
            assert config["segment.ms"] == "60000", (topic, config["segment.ms"])
            assert config["max.compaction.lag.ms"] == "300000", topic
    with capsys.disabled():
        print(
            f"\ncheckpoint restore on {kafka_broker.kind}: {len(decided)} transactions, "
            f"restored {restored} (partition: checkpoint offset, records replayed after it), "
            f"history before the checkpoints deleted: {deleted}"
        )
