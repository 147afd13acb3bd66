"""``fraudstream replay``: a range replayed with the same rules and model equals the original
decisions (state before the range rebuilt from the topic), into a shadow topic or the live
decisions topic (then marked ``supersedes``); the same replay twice gives the same bytes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import orjson
import pytest

from streams.data.handbook import read_handbook_frame
from streams.data.produce import produce_history
from streams.data.simulate import simulate
from streams.kafka.topics import create_topics
from streams.process import worker_env
from streams.recovery.replay import Replayer, replay
from streams.rules.loader import load_rules
from streams.schema import iso_utc
from tests.integration.helpers import read_topic, stage1_thread
from tests.integration.recovery_support import (
    REPLAY_FIELDS,
    Tail,
    Worker,
    by_transaction,
    history,
    ids,
    recovery_settings,
)
from tests.support import REPO

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def _replay(settings, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "streams", "replay", *args],
        env=worker_env(settings),
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return orjson.loads(out.stdout)


def _strip(value: bytes) -> dict:
    d = orjson.loads(value)
    for name in REPLAY_FIELDS:
        d.pop(name, None)
    return d


@pytest.mark.timeout(240)
def test_replay_equals_the_original_decisions(kafka_broker, tmp_path, capsys):
    settings = recovery_settings(kafka_broker)
    create_topics(settings)
    df = history(customers=150, days=20, seed=61)
    produce_history(df, settings)
    t0 = int(df["ts_ms"].min())
    start, end = t0 + 8 * DAY_MS, t0 + 13 * DAY_MS
    in_range = set(
        df.filter((df["ts_ms"] >= start) & (df["ts_ms"] < end))["TRANSACTION_ID"]
        .cast(str)
        .to_list()
    )
    with Tail(settings, [settings.topic_decisions]) as tail:
        with stage1_thread(settings), Worker("stage2", settings, tmp_path):
            missing = tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=120)
            assert not missing
        original = {
            t: vs[0] for t, vs in by_transaction(tail.values(settings.topic_decisions)).items()
        }

        # into a shadow topic, with ISO times
        shadow = f"{settings.topic_decisions}.shadow"
        stats = _replay(
            settings,
            "--topic", settings.topic_transactions,
            "--from", iso_utc(start), "--to", iso_utc(end),
            "--to-topic", shadow,
        )  # fmt: skip
        assert stats["replayed"] == len(in_range) and stats["warmup"] > 0
        assert stats["supersedes"] is False
        replayed = read_topic(settings, shadow, len(in_range), 60, idle_s=1)
        got = {str(orjson.loads(m.value())["transaction_id"]): m.value() for m in replayed}
        assert set(got) == in_range and len(replayed) == len(in_range)
        differ = [t for t in in_range if _strip(got[t]) != orjson.loads(original[t])]
        assert not differ, f"{len(differ)} replayed decisions differ, e.g. {differ[:1]}"
        assert all(orjson.loads(v)["replay_id"] == stats["replay_id"] for v in got.values())

        # into the live topic, twice with one replay id, epoch-ms times
        args = ["--topic", settings.topic_transactions, "--from", str(start), "--to", str(end)]
        first = _replay(settings, *args, "--replay-id", "r1")
        second = replay(settings, settings.topic_transactions, start, end, replay_id="r1")
        assert first["supersedes"] is True and first == second.as_dict()
        total = len(ids(df)) + 2 * len(in_range)
        tail.wait_decided(settings.topic_decisions, ids(df), timeout_s=10)
        live = tail.values(settings.topic_decisions)
        while len(live) < total:
            tail.wait_decided(settings.topic_decisions, {"never"}, timeout_s=1)
            live = tail.values(settings.topic_decisions)
    superseding = [v for v in live if b'"replay_id":"r1"' in v]
    assert len(superseding) == 2 * len(in_range)
    twice = by_transaction(superseding)
    assert all(len(set(v)) == 1 for v in twice.values()), "same replay, different bytes"
    assert all(orjson.loads(v[0])["supersedes"] is True for v in twice.values())

    # the flagged topic alone: stage 2 replayed, equal to the stage-2 decisions in the range
    create_topics(settings, [f"{shadow}.s2"])
    s2 = replay(settings, settings.topic_flagged, start, end, to_topic=f"{shadow}.s2")
    stage2_in_range = {t for t in in_range if orjson.loads(original[t])["stage"] == 2}
    assert s2.replayed == len(stage2_in_range)
    for m in read_topic(settings, f"{shadow}.s2", len(stage2_in_range), 30, idle_s=1):
        tid = str(orjson.loads(m.value())["transaction_id"])
        assert _strip(m.value()) == orjson.loads(original[tid])
    with capsys.disabled():
        print(
            f"\nreplay: {len(in_range)} of {len(ids(df))} transactions in range, "
            f"{stats['warmup']} warm-up, all equal to the originals; actions {stats['actions']}"
        )


def test_replay_with_other_rules_and_labels_is_deterministic(kafka_broker, tmp_path):
    """With labels flowing and a different rule set: two replays of a range agree exactly (the
    labels are applied in event time), and the rule-set version is the given one."""
    settings = recovery_settings(kafka_broker)
    create_topics(settings)
    df = read_handbook_frame(
        simulate(customers=120, terminals=240, days=25, seed=62, compromised_cards_per_day=1)
    )
    produce_history(df, settings)  # with labels, 7 days after each transaction
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "amount.yaml").write_text(
        (rules / "amount.yaml").read_text().replace("description:", "description: (v2)", 1)
    )
    t0 = int(df["ts_ms"].min())
    start, end = t0 + 15 * DAY_MS, t0 + 20 * DAY_MS
    runs: list[dict[str, dict]] = []
    for _ in range(2):
        out: dict[str, dict] = {}

        def sink(decision: dict, ts_ms: int, out: dict = out) -> None:
            decision.pop("replay_id")
            out[str(decision["transaction_id"])] = decision

        replayer = Replayer(settings, settings.topic_transactions, start, end, rules_dir=rules)
        stats = replayer.run(sink)
        runs.append(out)
        assert stats.labels > 0 and stats.replayed == len(out) > 0
    assert runs[0] == runs[1]
    versions = {d["rules_version"] for d in runs[0].values()}
    assert versions == {load_rules(rules).version} != {load_rules(REPO / "rules").version}
