"""Rules over attributes, a blocklist and an allow-list, end to end on the broker, with a list
edited by the command line while the workers run (no restart)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams.kafka import clients
from streams.kafka.dlq import header_dict
from streams.kafka.topics import create_topics
from streams.rules.lists import edit_list
from streams.schema import encode, iso_utc
from tests.integration.helpers import read_topic, stage1_thread, stage2_process
from tests.support import REPO, isolated_settings

pytestmark = pytest.mark.integration
T0 = 1_522_540_800_000  # 2018-04-01T00:00:00Z


def _tx(i: int, card: str, terminal: str, **attributes: object) -> bytes:
    return encode(
        {
            "transaction_id": f"x{i}",
            "card_id": card,
            "terminal_id": terminal,
            "amount": 25.0 + i % 7,
            "timestamp": iso_utc(T0 + i * 60_000),
            **attributes,
        }
    )


HOME = {"card_country": "FR", "merchant_country": "FR", "channel": "pos", "mcc": "5411"}
ABROAD = {"card_country": "FR", "merchant_country": "US", "channel": "ecom", "mcc": "5999"}


def _decisions(settings, until: int) -> dict[str, dict]:
    msgs = read_topic(settings, settings.topic_decisions, until=until, timeout_s=180)
    return {m.key().decode(): orjson.loads(m.value()) for m in msgs}


def test_block_allow_and_attribute_rules_on_the_broker(kafka_broker, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "examples" / "attribute-rules", rules)
    for path in (REPO / "rules").glob("*.yaml"):
        shutil.copy(path, rules / path.name)
    edit_list(rules, "blocked_cards", add=["card-stolen"])
    edit_list(rules, "trusted_terminals", add=["atm-own"])
    edit_list(rules, "risky_countries", add=["ZZ"])
    settings = isolated_settings(kafka_broker.bootstrap, rules_dir=rules)
    create_topics(settings)
    producer = clients.producer(settings)
    first: dict[str, str] = {}  # transaction id -> what it is
    plan = (
        [("blocked", "card-stolen", "shop-1", HOME)] * 5
        + [("trusted", "card-a", "atm-own", ABROAD)] * 5  # would be flagged abroad online
        + [("abroad", f"card-{k}", "shop-2", ABROAD) for k in range(5)]
        + [("risky", "card-r", "shop-3", {**HOME, "merchant_country": "ZZ"})] * 3
        + [("home", f"card-h{k}", "shop-4", HOME) for k in range(20)]
    )
    for i, (kind, card, terminal, attributes) in enumerate(plan):
        producer.produce(settings.topic_transactions, _tx(i, card, terminal, **attributes), card)
        first[f"x{i}"] = kind
    bad = _tx(999, "card-z", "shop-1", **{**HOME, "channel": 7})
    producer.produce(settings.topic_transactions, bad, b"card-z")
    producer.flush(10)

    with stage1_thread(settings) as worker, stage2_process(settings):
        decided = _decisions(settings, len(first))
        version = decided["x0"]["rules_version"]
        # a card added to the blocklist while the workers run: declined from then on
        command = ["lists", "add", "blocked_cards", "card-h0", "--rules", str(rules)]
        done = subprocess.run(
            [sys.executable, "-m", "streams", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 60
        while worker.state.rules.version == version and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker.state.rules.version != version, "the list edit was not reloaded"
        later = len(plan) + 1000
        producer.produce(settings.topic_transactions, _tx(later, "card-h0", "shop-4", **HOME))
        producer.flush(10)
        decided = _decisions(settings, len(first) + 1)
        dead = read_topic(settings, settings.topic_dlq, until=1, timeout_s=30, idle_s=1)
        flagged = read_topic(settings, settings.topic_flagged, until=1, timeout_s=30, idle_s=1)

    assert set(first) <= set(decided)
    for tid, kind in first.items():
        d = decided[tid]
        if kind == "blocked":
            assert (d["stage"], d["action"]) == (1, "decline") and "blocked_card" in d["rules"]
        elif kind == "trusted":
            assert (d["stage"], d["action"]) == (1, "approve") and "trusted_terminal" in d["rules"]
        elif kind == "abroad":
            assert d["stage"] == 2 and "abroad_online" in d["rules"]
        elif kind == "risky":
            assert d["stage"] == 2 and d["action"] in ("review", "decline")
            assert "risky_country" in d["rules"]
    forwarded = {orjson.loads(m.value())["transaction_id"] for m in flagged}
    assert not {t for t, kind in first.items() if kind in ("blocked", "trusted")} & forwarded
    assert {t for t, kind in first.items() if kind in ("abroad", "risky")} <= forwarded
    # the card blocked at run time, under the new rule-set version
    d = decided[f"x{later}"]
    assert (d["stage"], d["action"]) == (1, "decline") and d["rules_version"] != version
    # the mistyped attribute: a dead letter with its bytes and the reason
    assert [m.value() for m in dead] == [bad]
    headers = header_dict(dead[0].headers())
    assert headers["dlq.error.kind"] == "validation"
    assert "`channel`" in headers["dlq.error.message"]
