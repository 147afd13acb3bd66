"""Per-card stage-2 context: an event-time window over the card's flagged transactions.

``flags_30d`` and ``declines_30d`` count the card's decisions in the 30 days up to a
transaction (itself included), ``previous_action`` is the action of the card's flagged
transaction just before it in those 30 days (None when there is none). Pure functions over the
value kept in the card table (``{"history": [[ts_ms, transaction_id, action, flags_30d,
declines_30d, previous_action], ...]}``, sorted by time then id).

Each entry keeps the context its transaction was given, and a redelivered transaction (stage 1
and stage 2 are at-least-once) gets that context back: its copies are identical even when the
history changed in between, which the crash tests found two ways. A stage-1 worker's commits
can lag its outputs by weeks of event time while it catches up, and a copy sent after the
restart came when the card's history had moved so far on that its window's oldest entries were
pruned (fewer flags); and records decided ahead of earlier ones of their card (a fetch running
when stage 2 resumes, ``streams.kafka.faust_commit``) were decided again, after the earlier
ones, with more. Entries older than ``CONTEXT_KEEP_MS`` before the card's latest one are
dropped, so a copy is identical when it comes within that much event time; an entry of the
older three-field form is answered by counting, as before.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

CARD_TABLE = "stage2-card-context"  # the faust table's name; its changelog is named after it
DAY_MS = 86_400_000
CONTEXT_WINDOW_MS = 30 * DAY_MS
CONTEXT_KEEP_MS = 60 * DAY_MS

# [ts_ms, transaction_id, action, flags_30d, declines_30d, previous_action], sorted by
# (ts_ms, transaction_id); the last three are the context the transaction was given
History = list[list[Any]]


def apply_card_context(ctx: dict[str, Any], decision: dict[str, Any], ts_ms: int) -> dict[str, Any]:
    """Set ``decision["card_context"]`` and return the card's new context.

    Transactions are kept by id, so a redelivered record is not counted twice and gets the
    context it was given the first time (see the module).
    """
    return apply_card_contexts(ctx, [(decision, ts_ms)])


def apply_card_contexts(
    ctx: dict[str, Any], items: Iterable[tuple[dict[str, Any], int]]
) -> dict[str, Any]:
    """``apply_card_context`` for several decisions of one card in order, with one copy of the
    history: the same contexts and the same final value as applying them one by one, so a
    worker writes the card's table entry once per batch."""
    # a shallow copy: entries are never changed in place, only inserted or dropped
    history: History = list(ctx.get("history") or [])
    for decision, ts_ms in items:
        history = _apply(history, decision, ts_ms)
    return {"history": history}


def _apply(history: History, decision: dict[str, Any], ts_ms: int) -> History:
    tid = str(decision.get("transaction_id"))
    key = (ts_ms, tid)
    pos = bisect_left(history, key, key=_entry_key)
    if pos < len(history) and (history[pos][0], history[pos][1]) == key:
        entry = history[pos]
        if len(entry) >= 6:  # a redelivery: the context it was given
            decision["card_context"] = _context(entry[3], entry[4], entry[5])
            return history
    else:
        history.insert(pos, [ts_ms, tid, decision["action"]])
    since = ts_ms - CONTEXT_WINDOW_MS
    flags = declines = 0
    for e in history[: pos + 1]:
        if e[0] > since:
            flags += 1
            if e[2] == "decline":
                declines += 1
    previous = history[pos - 1] if pos else None
    previous_action = previous[2] if previous is not None and previous[0] > since else None
    decision["card_context"] = _context(flags, declines, previous_action)
    history[pos] = [ts_ms, tid, history[pos][2], flags, declines, previous_action]
    horizon = history[-1][0] - CONTEXT_KEEP_MS
    if history[0][0] >= horizon:
        return history
    return [e for e in history if e[0] >= horizon]


def _context(flags: int, declines: int, previous_action: str | None) -> dict[str, Any]:
    return {"flags_30d": flags, "declines_30d": declines, "previous_action": previous_action}


def _entry_key(entry: list[Any]) -> tuple[Any, Any]:
    return (entry[0], entry[1])
