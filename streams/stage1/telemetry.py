"""What the stage-1 worker reports about each batch: Prometheus metrics and drift."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from streams.observability import metrics as m
from streams.rules.model import RuleSet
from streams.stage1.screen import ScreenedBatch

if TYPE_CHECKING:
    from streams.stage1.screen import Screener

RECALL_EVERY_S = 1.0


class Stage1Telemetry:
    def __init__(self, rules: RuleSet) -> None:
        m.init_stage(m.STAGE1)
        self.drift = m.DriftTracker(m.STAGE1)
        self.rules_changed(rules)
        self._lag_at = 0.0
        self._recall_at = 0.0
        self._partitions: set[int] = set()
        self._targets_set = False

    def rules_changed(self, rules: RuleSet) -> None:
        self._shadow = {r.id for r in rules.rules if r.shadow}
        m.set_rules_version(rules.version)
        self.drift.reset()

    def batch(
        self, consumed: int, out: ScreenedBatch | None, sent_ms: list[int], seconds: float
    ) -> None:
        m.record_consumed(m.STAGE1, consumed)
        m.observe_batch(m.STAGE1, consumed, seconds)
        m.set_broker_up(m.STAGE1, True)
        if out is None:
            return
        n = len(out.txs)
        flagged = int(out.flagged.sum())
        declined = int(out.blocked.sum())
        m.record_flagged(flagged)
        m.record_decision(m.STAGE1, "approve", n - flagged - declined)
        if declined:
            m.record_decision(m.STAGE1, "decline", declined)
        hits = out.hits
        if hits:
            m.record_rule_hits({k: v for k, v in hits.items() if k not in self._shadow})
            shadow = {k: v for k, v in hits.items() if k in self._shadow}
            if shadow:
                m.record_rule_hits(shadow, shadow=True)
        m.observe_scores(m.STAGE1, "stage1", out.stage1_score)
        self.drift.observe_scores(out.stage1_score)
        self.drift.observe_flags(flagged, n)
        if sent_ms:
            m.observe_end_to_end_since(m.STAGE1, np.asarray(sent_ms, dtype=np.float64))

    def recall(self, parts: Mapping[int, Screener]) -> None:
        """Each owned partition's recall controller (measured recall, budget, forward share),
        at most every ``RECALL_EVERY_S``; partitions no longer owned leave the gauges."""
        now = time.monotonic()
        if now - self._recall_at < RECALL_EVERY_S:
            return
        self._recall_at = now
        for partition in self._partitions - parts.keys():
            m.clear_stage1_recall(partition)
        self._partitions = set(parts)
        for partition, screener in parts.items():
            policy = screener.policy
            controller = policy.controller
            if not self._targets_set:
                m.set_stage1_targets(controller.target, controller.maximum)
                self._targets_set = True
            m.set_stage1_recall(
                partition, controller.recall, controller.budget, policy.forward_share()
            )

    def dead_letter(self, kind: str) -> None:
        m.record_dead_letter(m.STAGE1, kind)

    def labels(self, n: int, learned: int) -> None:
        if n:
            m.record_labels_consumed(n)
        if learned:
            m.record_online_model_update("classifier", learned)

    def reload(self, ok: bool) -> None:
        m.record_rule_reload(ok)

    def rules_share(self, share: float) -> None:
        m.set_rules_forward_share(share)

    def broker_error(self, err: Any) -> None:
        m.set_broker_up(m.STAGE1, False)

    def lag(self, consumer: Any, topic: str, partitions: list[int]) -> None:
        """Consumer lag per assigned partition, at most every 5 s (a broker round trip each)."""
        now = time.monotonic()
        if now - self._lag_at < 5.0:
            return
        self._lag_at = now
        from confluent_kafka import TopicPartition

        try:
            positions = consumer.position([TopicPartition(topic, p) for p in partitions])
            for tp in positions:
                _, high = consumer.get_watermark_offsets(tp, timeout=0.5)
                if tp.offset >= 0:
                    m.set_consumer_lag(m.STAGE1, topic, tp.partition, high - tp.offset)
        except Exception:  # lag is best effort; never stop the loop for it
            return
