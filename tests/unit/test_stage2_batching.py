"""The stage-2 worker's batch path: card context once per card per batch, scoring in steps,
outputs delivered before a batch is acked."""

from __future__ import annotations

import asyncio
import copy
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from streams.errors import BrokerError
from streams.features.names import MODEL_FEATURES
from streams.stage2 import output as output_module
from streams.stage2.context import DAY_MS, apply_card_context, apply_card_contexts
from streams.stage2.model import RiskModel
from streams.stage2.pipeline import sent_ms
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import Scorer
from streams.training.artifact import save_model_dir

# --- card context -------------------------------------------------------------------------


def _one_by_one(ctx: dict, items: list[tuple[dict, int]]) -> dict:
    for decision, ts in items:
        ctx = apply_card_context(ctx, decision, ts)
    return ctx


@pytest.mark.parametrize("seed", range(20))
def test_batch_context_equals_one_by_one(seed):
    rng = random.Random(seed)
    actions = ["approve", "review", "decline"]
    start = {"history": [[d * DAY_MS, f"h{d}", rng.choice(actions)] for d in range(0, 50, 7)]}
    items = []
    for _ in range(15):
        tid = f"t{rng.randrange(8)}"  # redeliveries of the same transaction included
        ts = rng.randrange(0, 120) * DAY_MS // 2  # some far enough apart to drop old entries
        items.append(({"transaction_id": tid, "action": rng.choice(actions)}, ts))
    single = copy.deepcopy(items)
    batched = copy.deepcopy(items)
    frozen = copy.deepcopy(start)
    assert apply_card_contexts(start, batched) == _one_by_one(start, single)
    assert [d["card_context"] for d, _ in batched] == [d["card_context"] for d, _ in single]
    assert start == frozen  # the table's current value is not changed in place


def test_batch_context_of_nothing_keeps_the_history():
    ctx = {"history": [[1, "a", "approve"]]}
    assert apply_card_contexts(ctx, []) == ctx
    assert apply_card_contexts({}, []) == {"history": []}


# --- scoring in steps ---------------------------------------------------------------------


def _model(seed: int, out) -> RiskModel:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, len(MODEL_FEATURES)))
    y = (X[:, seed] - X[:, 7] + rng.normal(scale=0.5, size=300) > 0.8).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": seed, "nthread": 1}
    dtrain = xgb.DMatrix(X, label=y, feature_names=MODEL_FEATURES)
    booster = xgb.train(params, dtrain, num_boost_round=10)
    save_model_dir(booster, {"feature_names": MODEL_FEATURES}, out, name=f"m{seed}")
    return RiskModel.load(out)


def test_prepare_predict_decisions_equal_score_batch(tmp_path):
    scorer = Scorer(_model(1, tmp_path / "a"), DecisionPolicy(0.3, 0.8), _model(2, tmp_path / "b"))
    X = np.random.default_rng(5).normal(size=(30, len(MODEL_FEATURES))).tolist()
    X[3][4] = None  # missing
    records = [
        {
            "transaction_id": f"tx{i}",
            "card_id": f"c{i % 4}",
            "features": dict(zip(MODEL_FEATURES, X[i], strict=True)),
            "stage1": {"rules_version": "r1", "rules_fired": ["R1"], "reasons": ["HIGH"]},
            **({"sent_ms": i} if i % 2 else {}),
        }
        for i in range(30)
    ]
    batch = scorer.prepare(records)
    stepped = scorer.decisions(batch, scorer.predict(batch))
    assert stepped == scorer.score_batch(records)
    assert all("challenger" in d and d["reasons"] is not None for d in stepped)
    empty = scorer.prepare([])
    assert scorer.decisions(empty, scorer.predict(empty)) == []


# --- outputs ------------------------------------------------------------------------------


class FakeProducer:
    """Records produced; delivery reports (with ``fail`` errors) served by ``flush``."""

    def __init__(self, fail: set[bytes] | None = None, full_after: int | None = None):
        self.fail = fail or set()
        self.full_after = full_after
        self.queued: list[tuple[Any, ...]] = []
        self.delivered: list[tuple[str, bytes]] = []

    def produce(self, topic, value, key, partition=-1, headers=None, on_delivery=None):
        if self.full_after is not None and len(self.queued) >= self.full_after:
            raise BufferError("queue full")
        self.queued.append((topic, key, value, on_delivery))

    def flush(self, timeout=None):
        for topic, key, _value, callback in self.queued:
            callback("broker down" if key in self.fail else None, None)
            if key not in self.fail:
                self.delivered.append((topic, key))
        self.queued.clear()
        return 0


def _output(monkeypatch, producer: FakeProducer) -> output_module.BatchOutput:
    monkeypatch.setattr(output_module.clients, "producer", lambda settings: producer)
    return output_module.BatchOutput(SimpleNamespace())  # type: ignore[arg-type]


def test_output_returns_once_everything_is_delivered(monkeypatch):
    producer = FakeProducer(full_after=2)  # a full local queue is flushed, then sending goes on
    out = _output(monkeypatch, producer)
    records = [("decisions", str(i).encode(), b"{}", [], -1) for i in range(5)]
    asyncio.run(out.send(records))  # type: ignore[arg-type]
    assert producer.delivered == [("decisions", str(i).encode()) for i in range(5)]
    assert producer.queued == []


def test_output_raises_when_a_record_is_not_delivered(monkeypatch):
    out = _output(monkeypatch, FakeProducer(fail={b"2"}))
    records = [("decisions", str(i).encode(), b"{}", [], -1) for i in range(4)]
    with pytest.raises(BrokerError, match="1 of 4"):
        asyncio.run(out.send(records))  # type: ignore[arg-type]


# --- pipeline helpers ---------------------------------------------------------------------


def test_produce_then_wait_for_delivery(monkeypatch):
    producer = FakeProducer()
    out = _output(monkeypatch, producer)

    async def main() -> None:
        first = await out.produce([("t", b"1", b"{}", [], -1)])
        second = await out.produce([("t", b"2", b"{}", [], -1)])
        assert [q[1] for q in producer.queued] == [b"1", b"2"]  # handed over in order
        await out.delivered(second)
        await out.delivered(first)
        assert producer.delivered == [("t", b"1"), ("t", b"2")]
        await out.delivered(await out.produce([]))  # nothing to wait for

    asyncio.run(main())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ([], None),
        ([("other", b"1"), ("sent_ms", b"123")], 123),
        ({"sent_ms": "45"}, 45),
        ([("sent_ms", b"")], None),
    ],
)
def test_sent_ms_header(headers, expected):
    event = SimpleNamespace(message=SimpleNamespace(headers=headers))
    assert sent_ms(event) == expected


def test_sent_ms_that_is_not_a_number_is_a_decode_error():
    event = SimpleNamespace(message=SimpleNamespace(headers=[("sent_ms", b"soon")]))
    with pytest.raises(ValueError):
        sent_ms(event)


# --- app settings -------------------------------------------------------------------------


def _built_app(tmp_path, **overrides):
    from pathlib import Path

    from streams.settings import Settings
    from streams.stage2.app import build_app

    root = Path(__file__).resolve().parents[2]
    settings = Settings(
        bootstrap_servers="127.0.0.1:1",
        stage2_app_id=f"unit-{tmp_path.name}",
        model_dir=root / "models" / "default",
        policy_file=root / "config" / "policy.yaml",
        **overrides,
    )
    return build_app(settings)


def test_app_takes_its_prefetch_from_settings(tmp_path):
    """The faust app's stream buffer (its prefetch) is the setting; the app is only built, no
    broker is contacted."""
    assert _built_app(tmp_path, stage2_stream_buffer=1234).conf.stream_buffer_maxsize == 1234


def test_app_consumer_fetch_wait_is_the_setting(tmp_path):
    """faust writes fetch_max_wait_ms=1500 into its aiokafka consumer; ours carries the setting
    to the consumer that its fetcher is built from (on start)."""
    app = _built_app(tmp_path, stage2_fetch_wait_ms=7)

    async def build_consumer() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(build_consumer()) == 7
