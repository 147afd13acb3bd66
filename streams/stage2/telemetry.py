"""Stage-2 metrics of batches: counts, actions, scores, latency, drift (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

from streams.observability import metrics


class Stage2Telemetry:
    """The stage's metrics. Send times of published decisions (``sent``) are kept until the
    next finished batch reports them as end-to-end latencies."""

    def __init__(self, drift: metrics.DriftTracker | None = None):
        metrics.init_stage(metrics.STAGE2)
        self.drift = drift if drift is not None else metrics.DriftTracker(metrics.STAGE2)
        self.sent_times: list[int] = []

    def models_changed(self, champion: str | None, challenger: str | None) -> None:
        """New model versions: published, and the drift monitors start over."""
        metrics.set_model_version(champion or "", challenger)
        self.drift.reset()

    def sent(self, sent_ms: int) -> None:
        self.sent_times.append(sent_ms)

    def batch(
        self, consumed: int, decided: list[dict[str, Any]], started: float, model: str
    ) -> None:
        """One finished batch: ``consumed`` events, its decisions, scored by ``model``, begun at
        ``started`` (``time.perf_counter``)."""
        metrics.record_consumed(metrics.STAGE2, consumed)
        metrics.observe_batch(metrics.STAGE2, consumed, time.perf_counter() - started)
        if not decided:
            return
        actions: dict[str, int] = {}
        for d in decided:
            actions[d["action"]] = actions.get(d["action"], 0) + 1
        metrics.record_decisions(metrics.STAGE2, actions)
        scores = [float(d["score"]) for d in decided]
        metrics.observe_scores(metrics.STAGE2, model, scores)
        self.drift.observe_scores(scores)
        self.drift.observe_actions(actions)
        sent = [float(v) for v in self.sent_times]
        self.sent_times.clear()
        if sent:
            metrics.observe_end_to_end_since(metrics.STAGE2, sent)
