"""Pure pieces of error recovery: stage-2 card context, redrive filters, the fault hook,
time flags, dead-letter ages."""

from __future__ import annotations

import pytest

from streams.cli.recovery_cmds import parse_time
from streams.errors import ConfigError
from streams.recovery.inspect import age_bucket, preview
from streams.recovery.redrive import RedriveFilter, marker_key, marker_topic
from streams.stage2.context import apply_card_context
from streams.stage2.faults import injected_fault_attempts

DAY = 86_400_000


def _decide(ctx: dict, tid: str, ts: int, action: str = "review") -> tuple[dict, dict]:
    decision = {"transaction_id": tid, "action": action}
    return apply_card_context(ctx, decision, ts), decision["card_context"]


def test_card_context_is_an_event_time_window():
    ctx: dict = {}
    ctx, a = _decide(ctx, "a", 0, "decline")
    ctx, b = _decide(ctx, "b", 10 * DAY)
    ctx, c = _decide(ctx, "c", 35 * DAY)
    assert a == {"flags_30d": 1, "declines_30d": 1, "previous_action": None}
    assert b == {"flags_30d": 2, "declines_30d": 1, "previous_action": "decline"}
    assert c == {"flags_30d": 2, "declines_30d": 0, "previous_action": "review"}  # a is 35 d old


def test_card_context_is_idempotent_and_order_free():
    ctx: dict = {}
    first = {}
    for tid, ts in [("a", 1), ("b", 2), ("c", 3)]:
        ctx, first[tid] = _decide(ctx, tid, ts)
    for tid, ts in [("b", 2), ("a", 1), ("c", 3), ("b", 2)]:  # redelivered, any order
        ctx, again = _decide(ctx, tid, ts)
        assert again == first[tid]
    assert len(ctx["history"]) == 3
    late: dict = {}
    given = {}
    for tid, ts in [("c", 3), ("a", 1), ("b", 2)]:  # out of order: c first, before a and b
        late, given[tid] = _decide(late, tid, ts)
    assert given["b"] == first["b"]  # its predecessor was there
    assert given["c"] == {"flags_30d": 1, "declines_30d": 0, "previous_action": None}
    for tid, ts in [("c", 3), ("b", 2), ("a", 1)]:  # copies get what the first one got
        assert _decide(late, tid, ts)[1] == given[tid]


def test_a_copy_gets_the_first_context_after_its_window_was_pruned():
    """Stage 1 re-sent a transaction of day 40 after the card's history reached day 75 (its
    commits lagged while it caught up): by then the card's entries before day 15 were pruned,
    and the copy counted one flag less than the first decision (crash test, embedded broker)."""
    ctx: dict = {}
    ctx, _ = _decide(ctx, "a", 11 * DAY)
    ctx, first = _decide(ctx, "x", 40 * DAY)
    ctx, _ = _decide(ctx, "late", 75 * DAY)
    assert [e[1] for e in ctx["history"]] == ["x", "late"]  # "a" is pruned
    ctx, again = _decide(ctx, "x", 40 * DAY)
    assert again == first == {"flags_30d": 2, "declines_30d": 0, "previous_action": "review"}


def test_an_entry_without_its_context_is_counted():
    """A card table written before entries kept their context (three fields)."""
    ctx = {"history": [[1, "a", "decline"], [2, "b", "review"]]}
    ctx, b = _decide(ctx, "b", 2)
    assert b == {"flags_30d": 2, "declines_30d": 1, "previous_action": "decline"}
    assert ctx["history"][1] == [2, "b", "review", 2, 1, "decline"]


def test_a_redelivery_after_the_history_was_pruned_gets_the_same_context():
    """The kill tests found copies that differed in ``previous_action``: the card's flagged
    transaction before this one was 62 days older, still in the history the first time and
    pruned (older than ``CONTEXT_KEEP_MS`` before the card's latest entry) by the time the copy
    came. Every field now looks at the 30-day window only."""
    ctx: dict = {}
    ctx, _ = _decide(ctx, "old", 0, "decline")
    ctx, first = _decide(ctx, "x", 62 * DAY)
    assert [e[1] for e in ctx["history"]] == ["x"]  # "old" is pruned
    ctx, again = _decide(ctx, "x", 62 * DAY)
    assert again == first == {"flags_30d": 1, "declines_30d": 0, "previous_action": None}


def test_card_context_forgets_old_entries():
    ctx: dict = {}
    ctx, _ = _decide(ctx, "old", 0)
    ctx, _ = _decide(ctx, "new", 90 * DAY)
    assert [e[1] for e in ctx["history"]] == ["new"]


def test_redrive_filter():
    h = {"dlq.error.kind": "transient", "dlq.last.failure.ms": "5000"}
    assert RedriveFilter().matches(0, 7, h, 0)
    assert RedriveFilter(kinds=frozenset({"transient"})).matches(0, 7, h, 0)
    assert not RedriveFilter(kinds=frozenset({"decode"})).matches(0, 7, h, 0)
    assert RedriveFilter(since_ms=5000, until_ms=5001).matches(0, 7, h, 0)
    assert not RedriveFilter(since_ms=5001).matches(0, 7, h, 0)
    assert not RedriveFilter(until_ms=5000).matches(0, 7, h, 0)
    assert RedriveFilter(partition=0, from_offset=7, to_offset=7).matches(0, 7, h, 0)
    assert not RedriveFilter(partition=1).matches(0, 7, h, 0)
    assert not RedriveFilter(from_offset=8).matches(0, 7, h, 0)
    assert not RedriveFilter(to_offset=6).matches(0, 7, h, 0)
    assert RedriveFilter(since_ms=100).matches(0, 7, {}, 150)  # no header: record time
    assert marker_topic("x.dlq") == "x.dlq.redriven" and marker_key(2, 9) == "2:9"


def test_fault_hook():
    assert injected_fault_attempts("") is None
    assert injected_fault_attempts("stage2-transient") == 1_000_000
    assert injected_fault_attempts("other, stage2-transient:2") == 2


def test_time_flags():
    assert parse_time("2018-04-01T00:00:31", "--from") == 1522540831000
    assert parse_time("2018-04-01T00:00:31Z", "--from") == 1522540831000
    assert parse_time("1522540831000", "--to") == 1522540831000
    assert parse_time(None, "--to") is None
    with pytest.raises(ConfigError, match="--from"):
        parse_time("yesterday", "--from")


def test_inspect_helpers():
    assert age_bucket(0) == "< 1 h"
    assert age_bucket(2 * 3_600_000) == "1 h – 1 d"
    assert age_bucket(3 * DAY) == "1 d – 7 d"
    assert age_bucket(30 * DAY) == "> 7 d"
    assert preview(None) == "(null)"
    assert preview(b"\xff" + b"a" * 100, width=4) == "\\xffaaa…"
