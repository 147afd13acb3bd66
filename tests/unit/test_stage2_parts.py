"""The stage-2 app's parts without faust: model versions, output records, stats, telemetry."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import REGISTRY

from streams.stage2.context import apply_card_contexts
from streams.stage2.output import ANY_PARTITION
from streams.stage2.records import OutputRecords
from streams.stage2.stats import Stage2Stats
from streams.stage2.telemetry import Stage2Telemetry
from streams.stage2.versions import ModelVersions

# --- model versions ------------------------------------------------------------------------


class Holder:
    """A model directory whose next ``maybe_reload`` loads ``pending``, if set."""

    def __init__(self, version: str):
        self.model = SimpleNamespace(version=version)
        self.pending: str | None = None

    def maybe_reload(self) -> bool:
        if self.pending is None:
            return False
        self.model, self.pending = SimpleNamespace(version=self.pending), None
        return True


class SwapRecorder:
    def __init__(self) -> None:
        self.swaps: list[dict[str, Any]] = []

    def swap(self, **kwargs: Any) -> None:
        self.swaps.append({k: v.version for k, v in kwargs.items()})


def _versions(challenger: Holder | None = None):
    champion, scorer, changes = Holder("c1"), SwapRecorder(), []
    versions = ModelVersions(
        scorer,  # type: ignore[arg-type]
        champion,  # type: ignore[arg-type]
        challenger,  # type: ignore[arg-type]
        lambda a, b: changes.append((a, b)),
    )
    return versions, champion, scorer, changes


def test_the_first_refresh_reports_the_versions_then_only_changes():
    versions, _, scorer, changes = _versions()
    assert versions.champion_version == ""  # nothing reported yet
    versions.refresh()
    versions.refresh()
    assert changes == [("c1", None)] and scorer.swaps == []
    assert versions.champion_version == "c1"


def test_a_reloaded_champion_is_swapped_in_and_reported():
    versions, champion, scorer, changes = _versions()
    versions.refresh()
    champion.pending = "c2"
    versions.refresh()
    assert scorer.swaps == [{"champion": "c2"}]
    assert changes == [("c1", None), ("c2", None)] and versions.champion_version == "c2"


def test_a_reloaded_challenger_is_swapped_in_and_reported():
    challenger = Holder("x1")
    versions, _, scorer, changes = _versions(challenger)
    versions.refresh()
    challenger.pending = "x2"
    versions.refresh()
    assert scorer.swaps == [{"challenger": "x2"}]
    assert changes == [("c1", "x1"), ("c1", "x2")]


# --- output records ------------------------------------------------------------------------


def _decision(tid: str, card: str, action: str = "approve", **extra: Any) -> dict[str, Any]:
    return {"transaction_id": tid, "card_id": card, "action": action, "score": 0.5, **extra}


def test_one_changelog_record_per_card_then_the_decisions():
    cards: dict[str, Any] = {"A": {"history": [[5, "old", "decline"]]}}
    sent: list[int] = []
    builder = OutputRecords(cards, "changelog", "decisions", sent.append)
    records = [
        {"transaction_id": "t1", "card_id": "A", "ts_ms": 10},
        {"transaction_id": "t2", "card_id": "B", "ts_ms": 20},
        {"transaction_id": "t3", "card_id": "A", "ts_ms": 30},
    ]
    decided = [
        _decision("t1", "A", sent_ms=111),
        _decision("t2", "B", "review"),
        _decision("t3", "A", "decline", sent_ms=333),
    ]
    expected_a = apply_card_contexts(
        {"history": [[5, "old", "decline"]]},
        [(_decision("t1", "A"), 10), (_decision("t3", "A", "decline"), 30)],
    )
    out = builder.build(records, iter([1, 0, 1]), decided)

    assert [(r[0], r[1], r[4]) for r in out] == [
        ("changelog", b'"A"', 1),  # the card's flagged-topic partition
        ("changelog", b'"B"', 0),
        ("decisions", b"t1", ANY_PARTITION),
        ("decisions", b"t2", ANY_PARTITION),
        ("decisions", b"t3", ANY_PARTITION),
    ]
    assert orjson.loads(out[0][2]) == expected_a == cards["A"]  # the table holds the new value
    assert cards["B"] == {"history": [[20, "t2", "review", 1, 0, None]]}
    values = [orjson.loads(r[2]) for r in out[2:]]
    assert [v["card_context"] for v in values] == [
        {"flags_30d": 2, "declines_30d": 1, "previous_action": "decline"},
        {"flags_30d": 1, "declines_30d": 0, "previous_action": None},
        {"flags_30d": 3, "declines_30d": 2, "previous_action": "approve"},
    ]
    assert all("sent_ms" not in v for v in values) and all("sent_ms" not in d for d in decided)
    assert [r[3] for r in out[2:]] == [[("sent_ms", b"111")], [], [("sent_ms", b"333")]]
    assert sent == [111, 333]


def test_a_decision_without_its_record_goes_to_any_partition_at_time_zero():
    cards: dict[str, Any] = {}
    out = OutputRecords(cards, "changelog", "decisions").build([], [], [_decision("t9", "C")])
    assert out[0][:2] == ("changelog", b'"C"') and out[0][4] == ANY_PARTITION
    assert cards["C"] == {"history": [[0, "t9", "approve", 1, 0, None]]}


# --- stats ---------------------------------------------------------------------------------


def test_the_first_rebalance_makes_the_app_ready_and_says_so_once(caplog):
    stats = Stage2Stats()
    with caplog.at_level(logging.INFO, logger="streams.stage2.app"):
        stats.rebalanced(object())
        stats.rebalanced(object(), signal=None)
    assert stats.ready
    assert [r.getMessage() for r in caplog.records] == ["stage 2 ready: partitions assigned"]


# --- telemetry -----------------------------------------------------------------------------


class Drift:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def observe_scores(self, scores: list[float]) -> None:
        self.calls.append(("scores", scores))

    def observe_actions(self, actions: dict[str, int]) -> None:
        self.calls.append(("actions", actions))

    def reset(self) -> None:
        self.calls.append(("reset", None))


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_feeds_counts_drift_and_the_latencies_of_decisions_sent_so_far():
    drift = Drift()
    telemetry = Stage2Telemetry(drift)  # type: ignore[arg-type]
    declines = _sample("fraudstream_decisions_total", stage="stage2", action="decline")
    consumed = _sample("fraudstream_transactions_consumed_total", stage="stage2")
    latencies = _sample("fraudstream_end_to_end_seconds_count", stage="stage2")
    telemetry.sent(1_000)
    telemetry.sent(2_000)
    decided = [_decision("t1", "A", "decline"), _decision("t2", "A", "approve")]
    telemetry.batch(3, decided, started=0.0, model="m1")
    assert drift.calls == [("scores", [0.5, 0.5]), ("actions", {"decline": 1, "approve": 1})]
    assert _sample("fraudstream_decisions_total", stage="stage2", action="decline") == declines + 1
    assert _sample("fraudstream_transactions_consumed_total", stage="stage2") == consumed + 3
    assert _sample("fraudstream_end_to_end_seconds_count", stage="stage2") == latencies + 2
    assert telemetry.sent_times == []
    telemetry.batch(2, [], started=0.0, model="m1")  # nothing decided: counts only
    assert len(drift.calls) == 2


def test_new_model_versions_reset_the_drift_monitors():
    drift = Drift()
    Stage2Telemetry(drift).models_changed("m2", None)  # type: ignore[arg-type]
    assert drift.calls == [("reset", None)]
