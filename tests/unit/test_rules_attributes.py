"""Rules over declared attributes, value lists and the block / allow / review actions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from streams.errors import RuleError, ValidationError
from streams.rules.attributes import parse_schema
from streams.rules.engine import RuleResult
from streams.rules.expr import Catalog, compile_condition
from streams.rules.lists import edit_list, entries_of, parse_list
from streams.rules.loader import load_rules, validate_dir
from streams.schema import Transaction, encode
from streams.settings import load_settings
from streams.stage1.screen import Screener
from streams.stage1.state import decode_transaction

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "attribute-rules"
T0 = 1_522_540_831_000
SCHEMA = """fields:
  card_country: {type: string, required: true}
  merchant_country: {type: string}
  mcc: {type: category, values: ["5411", "4829"]}
  amount_usd: {type: number}
  card_present: {type: boolean}
  tz: {type: string}
timezone: tz
"""


def _schema():
    schema, problems = parse_schema("schema.yaml", SCHEMA)
    assert problems == []
    return schema


# --- the schema ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fields:\n  a: {type: text}\n", "schema.yaml:2: field `a`: bad type 'text'"),
        ("fields:\n  Bad: {type: string}\n", "schema.yaml:2: field `Bad`: a field name is"),
        (
            "fields:\n  amount: {type: number}\n",
            "schema.yaml:2: field `amount`: `amount` is a core",
        ),
        (
            "fields:\n  a: {type: string, values: [x]}\n",
            "schema.yaml:2: field `a`: `values` only applies to `type: category`",
        ),
        ("fields:\n  a: {type: number}\ntimezone: a\n", "schema.yaml:3: schema: `timezone` must"),
        ("fields:\n  a: {type: number, default: x}\n", "schema.yaml:2: field `a`: default:"),
    ],
)
def test_schema_problems_name_file_and_line(text: str, expected: str) -> None:
    _, problems = parse_schema("schema.yaml", text)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"card_country": 33}, "`card_country` must be a string"),
        ({}, "missing required field `card_country`"),
        ({"card_country": "FR", "mcc": "9999"}, "`mcc` '9999' is not one of its declared values"),
        ({"card_country": "FR", "amount_usd": "12"}, "`amount_usd` must be a number"),
        ({"card_country": "FR", "card_present": 1}, "`card_present` must be true or false"),
        ({"card_country": "FR", "tz": "Mars/Olympus"}, "'Mars/Olympus' is not a time zone"),
    ],
)
def test_a_mistyped_declared_field_is_a_validation_error(extra: dict, message: str) -> None:
    tx = {"transaction_id": "1", "card_id": "c", "terminal_id": "t", "amount": 1.0}
    value = encode({**tx, "timestamp": "2018-04-01T00:00:00Z", **extra})
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        decode_transaction(value, _schema())


def test_undeclared_extras_are_carried_and_valid_ones_pass() -> None:
    value = encode(
        {
            "transaction_id": "1",
            "card_id": "c",
            "terminal_id": "t",
            "amount": 1.0,
            "timestamp": "2018-04-01T00:00:00Z",
            "card_country": "FR",
            "device": {"os": "ios"},
        }
    )
    tx = decode_transaction(value, _schema())
    assert tx.raw["device"] == {"os": "ios"}


# --- conditions ------------------------------------------------------------------------------
def test_conditions_over_attributes_compile_and_unknown_ones_are_refused() -> None:
    catalog = Catalog(_schema(), frozenset({"blocked_cards"}))
    for text in (
        "card_country != merchant_country",
        "mcc IN ('5411', '4829') AND TX_AMOUNT > 100",
        "STARTS_WITH(mcc, '54') OR merchant_country IS NULL",
        "card_id IN LIST blocked_cards",
        "card_id NOT IN LIST blocked_cards AND card_present",
        "LOCAL_HOUR < 6 AND LOCAL_WEEKDAY >= 5",
    ):
        compile_condition(text, catalog)
    with pytest.raises(RuleError, match="did you mean `card_country`"):
        compile_condition("card_countr = 'FR'", catalog)
    with pytest.raises(RuleError, match="unknown list `nope`"):
        compile_condition("card_id IN LIST nope", catalog)
    with pytest.raises(RuleError, match="lists hold strings"):
        compile_condition("TX_AMOUNT IN LIST blocked_cards", catalog)
    with pytest.raises(RuleError, match="cannot evaluate"):
        compile_condition("card_country = 3", catalog)
    with pytest.raises(RuleError, match="LOCAL_HOUR"):  # no timezone declared: unknown
        compile_condition("LOCAL_HOUR < 6", Catalog())


def test_local_hour_and_weekday_follow_each_transactions_zone() -> None:
    schema = _schema()
    # 2018-04-01T23:30Z is a Sunday; 01:30 Monday in Paris (UTC+2), 19:30 Sunday in New York
    ts = np.array([T0 - T0 % 86_400_000 + 84_600_000] * 3, dtype=np.int64)
    txs = [
        Transaction("1", "c", "t", 1.0, int(ts[0]), {"tz": zone})
        for zone in ("Europe/Paris", "America/New_York", None)
    ]
    hour, weekday = schema.columns(["LOCAL_HOUR", "LOCAL_WEEKDAY"], txs, ts)
    assert hour.to_list()[:2] == [1.0, 19.0] and np.isnan(hour.to_list()[2])
    assert weekday.to_list()[:2] == [0.0, 6.0]


# --- lists -----------------------------------------------------------------------------------
def test_list_files_with_and_without_header_and_expiry() -> None:
    csv = "value,expires\nA1,\nB2,2018-04-02T00:00:00Z\n"
    value_list = parse_list("l", "l.csv", csv)
    ts = np.array([T0, T0, T0 + 2 * 86_400_000], dtype=np.int64)  # B2 expired in the third
    hits = value_list.contains(pl.Series(["A1", "B2", "B2"]), ts)
    assert hits.to_list() == [True, True, False]
    assert parse_list("l", "l.csv", "X\nY\n").always == frozenset({"X", "Y"})
    yaml = "values:\n  - A1\n  - {value: B2, expires: 2018-04-02}\n"
    assert dict(parse_list("l", "l.yaml", yaml).expiring) == {"B2": 1_522_627_200_000}
    with pytest.raises(ValidationError, match=r"l.csv:3: bad expiry"):
        parse_list("l", "l.csv", "value\nA\nB,someday\n")


def test_lists_are_edited_atomically_and_versioned(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(EXAMPLE, rules)
    before = load_rules(rules).version
    path, size = edit_list(rules, "blocked_cards", add=["c1", "c2"], expires=None)
    assert size == 2 and entries_of(path) == {"c1": None, "c2": None}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    after = load_rules(rules)
    assert after.version != before and after.lists["blocked_cards"].always == {"c1", "c2"}
    edit_list(rules, "blocked_cards", remove=["c1"])
    assert load_rules(rules).lists["blocked_cards"].always == {"c2"}


def test_a_bad_list_file_is_refused_with_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(EXAMPLE, rules)
    (rules / "lists" / "blocked_cards.csv").write_text("value\nok\na,b,c\n")
    problems = validate_dir(rules)
    assert any("blocked_cards.csv:3: expected `value` or `value,expires`" in p for p in problems)


# --- actions and their precedence ------------------------------------------------------------
def _result(**cols: list[bool]) -> RuleResult:
    n = len(next(iter(cols.values())))
    arrays = {k: np.array(cols.get(k, [False] * n)) for k in ("flag", "review", "block", "allow")}
    return RuleResult(
        **arrays,
        score=np.zeros(n),
        fired=[[]] * n,
        shadow_fired=[[]] * n,
        reasons=[[]] * n,
        hits={},
        version="v",
    )


def test_block_beats_allow_unless_configured_and_both_beat_forwarding() -> None:
    result = _result(
        flag=[True, True, True, True],
        review=[False, True, False, False],
        block=[True, False, False, True],
        allow=[True, True, False, False],
    )
    default = result.settle()
    assert default.block.tolist() == [True, False, False, True]
    assert default.allow.tolist() == [False, True, False, False]
    assert default.forward.tolist() == [False, False, True, False]
    assert default.review.tolist() == [False, False, False, False]
    flipped = result.settle(allow_beats_block=True)
    assert flipped.block.tolist() == [False, False, False, True]
    assert flipped.allow.tolist() == [True, True, False, False]


def _screener(rules_dir: Path, **settings: object) -> Screener:
    return Screener.from_settings(load_settings(**settings), load_rules(rules_dir))


def _txs(n: int, **raw: object) -> list[Transaction]:
    return [
        Transaction(f"t{i}", f"card{i % 3}", f"term{i % 2}", 20.0, T0 + i * 1000, dict(raw))
        for i in range(n)
    ]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(EXAMPLE, rules)
    edit_list(rules, "blocked_cards", add=["card0"])
    edit_list(rules, "trusted_terminals", add=["term1"])
    return rules


def test_a_block_declines_at_stage_1_and_an_allow_is_never_forwarded(rules_dir: Path) -> None:
    # every payment abroad and online: `abroad_online` flags them all
    out = _screener(rules_dir).screen(
        _txs(12, card_country="FR", merchant_country="US", channel="ecom")
    )
    for i, tx in enumerate(out.txs):
        blocked, trusted = tx.card_id == "card0", tx.terminal_id == "term1"
        assert out.blocked[i] == blocked
        assert out.allowed[i] == (trusted and not blocked)
        assert out.flagged[i] == (not blocked and not trusted)
        if not out.flagged[i]:
            decision = out.decision(i)
            assert decision["stage"] == 1
            assert decision["action"] == ("decline" if blocked else "approve")
            assert ("blocked_card" in decision["rules"]) == blocked


def test_allow_beats_block_when_configured(rules_dir: Path) -> None:
    out = _screener(rules_dir, rules_allow_beats_block=True).screen(_txs(6))
    both = [
        i for i, tx in enumerate(out.txs) if tx.card_id == "card0" and tx.terminal_id == "term1"
    ]
    assert both and all(out.allowed[i] and not out.blocked[i] for i in both)


def test_an_allow_beats_the_online_model_too(rules_dir: Path) -> None:
    # the anomaly threshold at 0 would forward everything a rule does not decide
    out = _screener(rules_dir, flag_anomaly_threshold=0.0).screen(_txs(12))
    assert not out.flagged[out.allowed].any() and out.allowed.any()
    assert out.flagged[~(out.allowed | out.blocked)].all()


def test_a_review_rule_forwards_with_a_floor_stage_2_applies(rules_dir: Path) -> None:
    edit_list(rules_dir, "risky_countries", add=["XX"])
    edit_list(rules_dir, "blocked_cards", remove=["card0"])
    edit_list(rules_dir, "trusted_terminals", remove=["term1"])
    out = _screener(rules_dir).screen(_txs(3, card_country="XX", merchant_country="XX"))
    assert out.flagged.all() and out.review.all()
    record = out.flagged_record(0)
    assert record["min_action"] == "review" and "risky_country" in record["stage1"]["rules_fired"]


def test_shadow_mode_holds_for_every_action(rules_dir: Path) -> None:
    """A shadow block / allow is recorded in shadow_rules_fired and never decides."""
    path = rules_dir / "attributes.yaml"
    text = path.read_text()
    for rule_id in ("blocked_card", "trusted_terminal"):
        text = text.replace(f"  - id: {rule_id}\n", f"  - id: {rule_id}\n    shadow: true\n")
    path.write_text(text)
    out = _screener(rules_dir).screen(_txs(12))
    assert not out.blocked.any() and not out.allowed.any()
    shadow = [set(ids) for ids in out.shadow_fired]
    for i, tx in enumerate(out.txs):
        assert ("blocked_card" in shadow[i]) == (tx.card_id == "card0")
        assert ("trusted_terminal" in shadow[i]) == (tx.terminal_id == "term1")
