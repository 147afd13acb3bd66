"""The published JSON Schemas (``schemas/``) are the ones ``streams.output_schema`` derives, and
every kind of record the stages write validates against them: stage 1's approvals and flagged
records, stage 2's decisions with their card context, with and without a challenger."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.data.handbook import read_handbook_frame
from streams.data.simulate import simulate
from streams.output_schema import (
    APPROVAL_SLOTS,
    SCHEMA_DIR,
    json_schemas,
    stage1_approval_format,
    stage1_decision,
)
from streams.rules.loader import load_rules
from streams.settings import load_settings
from streams.stage1.history import frame_transactions
from streams.stage1.outputs import encode_outputs
from streams.stage1.screen import Screener
from streams.stage2.records import OutputRecords
from streams.stage2.versions import ModelVersions

REPO = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(bootstrap_servers="127.0.0.1:1", rules_dir=REPO / "rules")


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, value: bytes) -> list[str]:
    return [e.message for e in validator.iter_errors(orjson.loads(value))]


def test_the_published_schemas_are_the_derived_ones():
    for name, text in json_schemas().items():
        assert (SCHEMA_DIR / name).read_text() == text, (
            f"schemas/{name} is stale: run python -m streams.output_schema"
        )


@pytest.fixture(scope="module")
def stage1_outputs() -> tuple[list[bytes], list[bytes]]:
    df = read_handbook_frame(
        simulate(customers=200, terminals=400, days=20, seed=5, compromised_cards_per_day=2)
    )
    txs = frame_transactions(df.sort("ts_ms"))[:3000]
    screener = Screener.from_settings(SETTINGS, load_rules(REPO / "rules"))
    approved, flagged = [], []
    for i in range(0, len(txs), 700):
        out = screener.screen(txs[i : i + 700])
        for value, forwarded in zip(encode_outputs(out), out.flagged.tolist(), strict=True):
            (flagged if forwarded else approved).append(value)
    assert approved and flagged
    return approved, flagged


def test_stage1_outputs_follow_the_schemas(stage1_outputs):
    approved, flagged = stage1_outputs
    decision, record = _validator("decision.schema.json"), _validator("flagged.schema.json")
    assert [e for v in approved for e in _errors(decision, v)] == []
    assert [e for v in flagged for e in _errors(record, v)] == []
    # and the schemas are not vacuous: the other shape, or a missing field, is refused
    assert _errors(decision, flagged[0])
    assert _errors(record, approved[0])
    broken = orjson.loads(approved[0])
    del broken["score"]
    assert _errors(decision, orjson.dumps(broken))


@pytest.mark.parametrize("challenger", [False, True])
def test_stage2_decisions_follow_the_schema(stage1_outputs, challenger):
    _, flagged = stage1_outputs
    models = ModelVersions.load(
        REPO / "models" / "default",
        REPO / "models" / "default" if challenger else None,
        REPO / "config" / "policy.yaml",
        lambda a, b: None,
    )
    records = [orjson.loads(v) for v in flagged]
    decided = models.scorer.score_batch(records)
    out = OutputRecords({}, "changelog", "decisions").build(records, [0] * len(records), decided)
    values = [value for topic, _, value, _, _ in out if topic == "decisions"]
    assert len(values) == len(records)
    validator = _validator("decision.schema.json")
    assert [e for v in values for e in _errors(validator, v)] == []
    parsed = [orjson.loads(v) for v in values]
    assert all(d["stage"] == 2 and d["card_context"] is not None for d in parsed)
    assert all(("challenger" in d) == challenger for d in parsed)


@pytest.mark.parametrize(
    ("tid", "card", "version"),
    [
        ("123", "c-9", "3f2a91"),
        ('a"b\\c', "caf\u00e9 \u2028", "v%1%s"),  # quotes, backslash, non-ASCII, a % in the version
        (
            "\x01tid",
            "\x00\x1f",
            "\x01score",
        ),  # control characters, a version that looks like a mark
    ],
)
def test_approval_format_writes_the_decisions_bytes(tid: str, card: str, version: str) -> None:
    numbers = [0.0, 1e-06, 0.123456, 1.0, 1e300, float("nan"), 5]
    for a, p, r, s in zip(
        numbers, numbers[1:] + numbers[:1], numbers[2:] + numbers[:2], numbers[::-1], strict=True
    ):
        expected = orjson.dumps(
            stage1_decision(tid, card, "approve", version, [], [], [], a, p, r, s)
        )
        try:
            fmt = stage1_approval_format(version)
        except ValueError:  # refused when ambiguous: the caller builds the dict instead
            assert "\x01" in version
            continue
        parts = {"transaction_id": tid, "card_id": card, "anomaly": a, "probability": p}
        parts |= {"rule_score": r, "score": s}
        assert fmt % tuple(orjson.dumps(parts[name]) for name in APPROVAL_SLOTS) == expected
