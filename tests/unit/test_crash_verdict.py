"""The crash test's verdict over the decision records a reader saw."""

from __future__ import annotations

import orjson

from streams.crashtest.verdict import judge


def _d(tid: str, score: float = 0.5, flags: int = 1, **extra: object) -> bytes:
    value = {"transaction_id": tid, "action": "approve", "stage": 2, "score": score}
    value["card_context"] = {"flags_30d": flags, "declines_30d": 0}
    return orjson.dumps({**value, **extra})


def test_lost_duplicates_and_differences_are_told_apart() -> None:
    decisions = [
        _d("1"),
        _d("1"),  # an identical duplicate
        _d("2", flags=3),
        _d("2", flags=4),  # differs in a nested field only
        _d("3", score=0.1),
        _d("3", score=0.2, rules=["x"]),  # conflicts (score) and differs in two fields
    ]
    v = judge({"1", "2", "3", "4"}, decisions, {"4"}, [("t", "0", "5")] * 2, poison_sent=1)
    assert (v.lost, v.lost_after_forwarding, v.duplicates) == (1, 1, 3)
    assert (v.differing_bytes, v.conflicting, v.conflicting_score) == (2, 1, 1)
    assert v.differing_fields == {"card_context.flags_30d": 1, "rules": 1, "score": 1}
    assert (v.dead_letters, v.dead_letter_copies) == (1, 1)
    assert not v.ok
    assert v.as_dict()["differing_fields"] == v.differing_fields


def test_duplicates_are_counted_by_the_stage_that_wrote_them() -> None:
    decisions = [_d("1"), _d("1"), _d("1"), _d("2", stage=1), _d("2", stage=1), _d("3")]
    v = judge({"1", "2", "3"}, decisions, set(), [], poison_sent=0)
    assert v.duplicates == 3
    assert v.duplicates_by_stage == {"2": 2, "1": 1}
    assert v.examples is not None and sorted(v.examples["duplicated"]) == ["1", "2"]


def test_a_duplicate_that_differs_only_in_its_context_fails_the_run() -> None:
    v = judge({"1"}, [_d("1", flags=1), _d("1", flags=2)], set(), [], poison_sent=0)
    assert (v.lost, v.conflicting, v.differing_bytes) == (0, 0, 1)
    assert not v.ok
    assert judge({"1"}, [_d("1"), _d("1")], set(), [], poison_sent=0).ok
