"""Stage 2 restarted restores every card's context from its changelog, on both brokers.

Stage 2 keeps each card's flagged history in a faust table (memory store), so every start
restores it from the changelog topic. The embedded broker under-reports a partition's end
(BROKER.md: the first offset of its last record batch plus one), and faust's recovery stops at
that end: the cards in the rest of the last batch came back without their history, and their
next decisions counted fewer flags than the same decisions without the restart.
"""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest
from confluent_kafka import TopicPartition

from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.kafka import clients
from streams.kafka.partition_end import true_ends
from streams.kafka.topics import create_topics
from streams.settings import Settings
from streams.stage2.context import CONTEXT_WINDOW_MS
from tests.integration.helpers import read_topic, stage1_thread, stage2_process
from tests.support import Broker, isolated_settings

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture(params=["kafka_broker", "embedded_broker"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each test here runs on the integration broker and on the embedded one."""
    return request.getfixturevalue(request.param)


def _decisions_for(settings: Settings, until: int) -> dict[str, list[dict]]:
    """Every copy of each decision (both stages are at-least-once), by transaction id, in the
    topic's order."""
    copies: dict[str, list[dict]] = defaultdict(list)
    for m in read_topic(settings, settings.topic_decisions, until):
        value = orjson.loads(m.value())
        copies[str(value["transaction_id"])].append(value)
    return copies


def test_restarted_stage2_counts_every_earlier_flag_of_a_card(broker: Broker) -> None:
    settings = isolated_settings(broker.bootstrap, partitions=3)
    create_topics(settings)
    df = read_handbook_frame(
        simulate(
            customers=150,
            terminals=300,
            days=8,
            seed=23,
            compromised_terminals_per_day=2,
            compromised_cards_per_day=2,
        )
    )
    split = df["TX_TIME_DAYS"] < 6
    first, second = df.filter(split), df.filter(~split)

    with stage1_thread(settings):
        produce_history(first, settings)
        with stage2_process(settings):
            before = _decisions_for(settings, first.height)
        # a new stage-2 process: its card table comes back from the changelog only
        produce_history(second, settings)
        with stage2_process(settings):
            decided = _decisions_for(settings, df.height)

    assert set(before) <= set(decided) and len(decided) == df.height
    # the flagged records, a copy stage 1 sent twice (at-least-once) counted once
    flagged: dict[str, tuple[int, int, dict]] = {}
    for m in read_topic(settings, settings.topic_flagged, until=1, idle_s=1):
        r = orjson.loads(m.value())
        flagged.setdefault(str(r["transaction_id"]), (m.partition(), m.offset(), r))
    history: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for _, _, r in flagged.values():
        history[str(r["card_id"])].append((int(r["ts_ms"]), str(r["transaction_id"])))
    after_restart = 0
    wrong = []
    for tid, (_, _, r) in flagged.items():
        card, ts = str(r["card_id"]), int(r["ts_ms"])
        expected = sum(1 for h in history[card] if ts - CONTEXT_WINDOW_MS < h[0] and h <= (ts, tid))
        got = [d["card_context"]["flags_30d"] for d in decided[tid]]
        if tid not in before and expected > 1:
            after_restart += 1  # this decision needs history restored from the changelog
        if any(g != expected for g in got):
            wrong.append((tid, card, got, expected))
    assert after_restart >= 10, f"only {after_restart} decisions depended on restored history"
    if wrong:  # every flagged record of the cards concerned: (partition, offset, ts, tid, phase)
        cards = {card for _, card, _, _ in wrong}
        seen = [
            (p, o, r["ts_ms"], tid, "before" if tid in before else "after")
            for tid, (p, o, r) in flagged.items()
            if str(r["card_id"]) in cards
        ]
        raise AssertionError(
            f"{len(wrong)} decisions counted the wrong flags (tid, card, got per copy, want): "
            f"{wrong[:10]}; the cards' flagged records: {sorted(seen)[:40]}"
        )


def test_true_ends_find_the_last_record_of_the_last_batch(broker: Broker) -> None:
    settings = isolated_settings(broker.bootstrap, partitions=1)
    create_topics(settings)
    topic = settings.topic_flagged
    producer = clients.producer(settings, **{"linger.ms": 200})
    for batch in (1, 1, 1, 5):  # record batches of these sizes, as on the broker's log
        for i in range(batch):
            producer.produce(topic, b"x", str(i).encode(), partition=0)
        assert producer.flush(10) == 0
    consumer = clients.consumer(settings, "probe")
    try:
        _, listed = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert true_ends(settings, {(topic, 0): listed}) == {(topic, 0): 8}
    if broker.kind == "kafka":
        assert listed == 8  # exact there; the embedded broker listed 4 (2026-12-05)
    assert true_ends(settings, {(topic, 0): 0}) == {(topic, 0): 0}  # listed empty: not read
