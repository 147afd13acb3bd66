"""The stage-1 flag policy: what is forwarded to stage 2, and how much.

A transaction is forwarded when an acting ``flag`` rule fires, when the anomaly score reaches
its threshold, or when the models rank it among the top ``budget`` share of recent traffic.
Model-driven forwarding is a share of traffic, never an absolute probability (the online
model's scale drifts as it learns; a cut-off that fits one week floods the next):

- the **ranking**: a transaction's rank is the higher of its two percentiles among recent
  traffic, the online classifier's probability and the card-compromise posterior
  (``CARD_COMPROMISE_LOGIT``). The classifier weighs that posterior against every other input
  and learns from a few hundred labelled frauds; ranking by the posterior on its own as well
  forwards the payments of a compromised card whose amounts look ordinary, which the classifier
  ranks in the middle of the traffic. ``rank_by_posterior=False`` ranks by the classifier alone;

- the **budget** is the share of traffic stage 1 forwards in total. Recent transactions already
  forwarded by a rule or the anomaly score fill it first; the model takes the rest, so the total
  is max(budget, what rules and anomalies forward). The models' threshold is the quantile of
  the recent ranks (``CheckpointedValues``: fixed stream positions, so every batching and
  every replay gets the same decisions);
- **no floods**: in any ``BURST_WINDOW`` (5,000) and any ``SHORT_BURST_WINDOW`` (1,000)
  consecutive transactions of the partition (fewer at its start: the caps scale with them) the
  model forwards only while stage 1's forwards there (model, rules and anomalies) stay under
  ``BURST`` times the maximum forward share (14 % by default), whatever its scores do; rules
  and anomalies still forward beyond it (they are the analysts' to tune). The quantile
  threshold keeps the average at the budget; the caps only stop bursts (a model whose scores
  jump after it learns, a night when its scores run high), decided in stream order so every
  batching gives the same verdicts;
- the **recall controller** (``RecallController``) moves the budget between a floor and a
  maximum. For every labelled fraud of the partition it knows the share of traffic that ranked
  above that transaction when it was screened (0 when a rule or the anomaly score forwarded it);
  the budget is the smallest share that would have forwarded ``target`` of the recent labelled
  frauds, within [floor, maximum]. When even the maximum would not have (frauds nothing in the
  transaction reveals yet, such as the first frauds of a compromise), the budget stays at the
  maximum and the measured recall (a gauge, with an alert) says so. Frauds of a card already
  *known* compromised (one of its frauds had a published label before the transaction) are
  left out, as the evaluation protocol leaves them out: the fraud team has that card already,
  and such frauds, easy to catch, would hide how stage 1 does on the others (on a simulated
  variant where they were common, the measured recall said 98 % while stage 1 kept 96 % of
  the others).

Labels reach the controller at fixed stream positions (``streams.stage1.labelgate``), so the
budget, like the scores, is a function of the partition's stream and the label times.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from streams.errors import StateError
from streams.features.names import DAY_MS
from streams.online.window import CHECKPOINT_EVERY, CheckpointedValues, RecentValues
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.checkpoint.codec import StateReader, StateWriter

MIN_BUDGET_WINDOW = 200  # no model-driven forwarding while the reference holds fewer values
BURST_WINDOW = 5000  # transactions of the partition the burst cap looks back over
# and a shorter look back: a partition that forwarded little in its first thousands of
# transactions (the models still learning) could otherwise catch up on the long window's
# allowance in a few hundred, all partitions at once
SHORT_BURST_WINDOW = 1000
BURST = 1.4  # the cap: this many times the maximum forward share of each BURST_WINDOW
FORWARDED = np.inf  # the reference value of a transaction forwarded by a rule or an anomaly
NOT_RANKED = -1.0  # the rank of a transaction screened before the percentile windows had values
KNOWN_CARD_MS = 30 * DAY_MS  # how long a card stays known compromised after its first label


class RecallController:
    """The forward budget, learnt from the partition's labelled frauds (see the module)."""

    def __init__(
        self,
        target: float = 0.98,
        floor: float = 0.02,
        maximum: float = 0.10,
        memory: int = 200,
        min_frauds: int = 20,
    ):
        if not 0 <= floor <= maximum <= 1:
            raise ValueError(f"need 0 <= floor ({floor}) <= maximum ({maximum}) <= 1")
        self.target, self.floor, self.maximum = target, floor, maximum
        self.min_frauds = min_frauds
        self.budget = maximum  # until enough frauds are labelled: the most stage 2 takes
        # (share of traffic ranked above the fraud when screened, was it forwarded)
        self._frauds: deque[tuple[float, bool]] = deque(maxlen=memory)
        # card key -> publication time of its first fraud label (the last KNOWN_CARD_MS)
        self._known: dict[int, int] = {}
        self._pruned_at = 0
        self.known_card_frauds = 0  # frauds left out: their card was known when screened

    def observe(
        self,
        share: float,
        forwarded: bool,
        card: int | None = None,
        ts_ms: int = 0,
        known_ms: int = 0,
    ) -> None:
        """A labelled fraud of this partition: how it ranked and whether it was forwarded;
        ``card`` (``streams.online.supervised.card_key``), the transaction's time and when its
        label was published tell whether its card was known compromised then (left out)."""
        if card is not None:
            self._prune(known_ms)
            first = self._known.setdefault(card, known_ms)
            if first <= ts_ms:  # a fraud of the card was published before this transaction
                self.known_card_frauds += 1
                return
        self._frauds.append((share, forwarded))
        if len(self._frauds) < self.min_frauds:
            self.budget = self.maximum
            return
        shares = sorted(s for s, _ in self._frauds)
        needed = shares[max(0, math.ceil(self.target * len(shares)) - 1)]
        self.budget = min(self.maximum, max(self.floor, needed))

    def _prune(self, now_ms: int) -> None:
        """Forget the cards known for longer than ``KNOWN_CARD_MS`` (at most once a day, in
        label time: the same cards are forgotten however the labels were batched)."""
        if now_ms - self._pruned_at < DAY_MS:
            return
        horizon = now_ms - KNOWN_CARD_MS
        self._known = {c: t for c, t in self._known.items() if t >= horizon}
        self._pruned_at = now_ms

    def save_state(self, w: StateWriter, name: str) -> None:
        w.meta[f"{name}.budget"] = self.budget
        w.meta[f"{name}.pruned_at"] = self._pruned_at
        w.meta[f"{name}.known_card_frauds"] = self.known_card_frauds
        w.numpy(f"{name}.shares", np.array([s for s, _ in self._frauds], dtype=np.float64))
        w.numpy(f"{name}.forwarded", np.array([f for _, f in self._frauds], dtype=np.bool_))
        w.numpy(f"{name}.known_cards", np.fromiter(self._known, np.int64, len(self._known)))
        w.numpy(f"{name}.known_ms", np.fromiter(self._known.values(), np.int64, len(self._known)))

    def load_state(self, r: StateReader, name: str) -> None:
        self.budget = float(r.meta[f"{name}.budget"])
        self._frauds.clear()
        shares, forwarded = r.numpy(f"{name}.shares"), r.numpy(f"{name}.forwarded")
        self._frauds.extend(zip(shares.tolist(), forwarded.tolist(), strict=True))
        self._known, self._pruned_at, self.known_card_frauds = {}, 0, 0
        if r.has(f"{name}.known_cards"):  # checkpoints before the known-card rule: none
            cards, known = r.numpy(f"{name}.known_cards"), r.numpy(f"{name}.known_ms")
            self._known = dict(zip(cards.tolist(), known.tolist(), strict=True))
            self._pruned_at = int(r.meta[f"{name}.pruned_at"])
            self.known_card_frauds = int(r.meta[f"{name}.known_card_frauds"])

    @property
    def recall(self) -> float:
        """Share of the recent labelled frauds that were forwarded (NaN before any)."""
        if not self._frauds:
            return math.nan
        return sum(f for _, f in self._frauds) / len(self._frauds)

    @property
    def at_maximum(self) -> bool:
        return self.budget >= self.maximum


class FlagPolicy:
    def __init__(
        self,
        anomaly_threshold: float = 0.995,
        controller: RecallController | None = None,
        window: int = 50_000,
        every: int = CHECKPOINT_EVERY,
        rank_by_posterior: bool = True,
    ):
        self.anomaly_threshold = anomaly_threshold
        self.controller = controller or RecallController()
        self.every = every
        self.rank_by_posterior = rank_by_posterior
        # the classifier's probabilities and the compromise posteriors of recent traffic, for
        # their percentiles (``rank``), refreshed at the same stream positions as the reference
        self._probabilities = CheckpointedValues(window, every)
        self._posteriors = CheckpointedValues(window, every)
        # ranks (``rank``) of recent traffic, FORWARDED for those rules or anomalies took
        self._reference = CheckpointedValues(window, every)
        # stream positions of the forwards in the last BURST_WINDOW and SHORT_BURST_WINDOW
        self._recent_forwards: deque[int] = deque()
        self._short_forwards: deque[int] = deque()
        self._flags = RecentValues(window)  # forwarded (1) or not (0): the forward share

    @classmethod
    def from_settings(cls, settings: Settings) -> FlagPolicy:
        return cls(
            settings.flag_anomaly_threshold,
            RecallController(
                settings.stage1_recall_target,
                settings.stage1_min_forward_share,
                settings.stage1_max_forward_share,
            ),
            rank_by_posterior=settings.stage1_rank_by_posterior,
        )

    def save_state(self, w: StateWriter, name: str) -> None:
        self.controller.save_state(w, f"{name}.controller")
        self._reference.save_state(w, f"{name}.reference")
        w.meta[f"{name}.ranking"] = self._ranking
        if self.rank_by_posterior:
            self._probabilities.save_state(w, f"{name}.probabilities")
            self._posteriors.save_state(w, f"{name}.posteriors")
        self._flags.save_state(w, f"{name}.flags")
        w.numpy(f"{name}.recent", np.array(self._recent_forwards, dtype=np.int64))

    def load_state(self, r: StateReader, name: str) -> None:
        """Raises ``StateError`` (the partition is rebuilt) for a checkpoint whose reference
        ranks another way (before the posterior's percentile, or with the other setting)."""
        self.controller.load_state(r, f"{name}.controller")
        ranking = r.meta.get(f"{name}.ranking", "classifier")
        if ranking != self._ranking:
            raise StateError(f"{name}: reference ranked by {ranking}, configured {self._ranking}")
        self._reference.load_state(r, f"{name}.reference")
        if self.rank_by_posterior:
            self._probabilities.load_state(r, f"{name}.probabilities")
            self._posteriors.load_state(r, f"{name}.posteriors")
        self._flags.load_state(r, f"{name}.flags")
        self._recent_forwards = deque(r.numpy(f"{name}.recent").tolist())
        self._short_forwards = deque(self._recent_forwards)  # trimmed as the stream goes on

    @property
    def _ranking(self) -> str:
        return "classifier+posterior" if self.rank_by_posterior else "classifier"

    def rank(self, probability: np.ndarray, posterior: np.ndarray | None) -> np.ndarray:
        """What the model's forwards rank by, per row: the higher of the percentiles of the
        probability and the posterior among recent traffic (both windows refreshed at fixed
        stream positions, so batch-independent); the probability itself when the policy ranks
        by the classifier alone or no posterior is given; ``NOT_RANKED`` before the windows hold
        a value. Adds the rows to the windows."""
        if not self.rank_by_posterior or posterior is None:
            return probability
        # NOT_RANKED, not 0, while a window is empty: 0 would be the lowest rank, not unknown
        ranked = np.maximum(
            self._probabilities.rank(probability, empty=NOT_RANKED),
            self._posteriors.rank(posterior, empty=NOT_RANKED),
        )
        self._probabilities.add(probability)
        self._posteriors.add(posterior)
        return ranked

    def forward_share(self) -> float:
        """Share of the recent window that was forwarded (NaN before any)."""
        values = self._flags.values()
        return float(values.mean()) if len(values) else math.nan

    def flag(
        self,
        rule_flag: np.ndarray,
        probability: np.ndarray,
        anomaly: np.ndarray,
        budget: float | None = None,
        exclude: np.ndarray | None = None,
        posterior: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(forwarded, share): the verdict of each transaction, and the share of the reference
        that ranked above it (0 for those a rule or the anomaly score forwarded). ``budget``:
        the controller's budget when the rows were scored (default: its budget now).
        ``exclude``: rows a rule already decided at stage 1 (block, allow): never forwarded,
        still ranked (their ranks stay in the reference). ``posterior``: the rows'
        ``CARD_COMPROMISE_LOGIT`` (``rank``)."""
        ranked = self.rank(probability, posterior)
        other = rule_flag | (anomaly >= self.anomaly_threshold)
        if exclude is not None and exclude.any():
            other = other & ~exclude
        reference = self._reference
        if budget is None:
            budget = self.controller.budget
        start = reference.added  # stream position of the first row
        candidate = np.zeros(len(ranked), dtype=bool)
        share = np.zeros(len(ranked))
        # what the reference gets: the ranks, FORWARDED where a rule or anomaly forwarded
        values = np.where(other, FORWARDED, ranked)
        for a, b, ref in reference.segments(values):
            rest = ~other[a:b]
            ref = ref[np.searchsorted(ref, 0.0) :]  # NOT_RANKED values sort first: left out
            if len(ref):
                # strictly above: ties (an unlearned model's zeros) never flood
                above = len(ref) - np.searchsorted(ref, ranked[a:b], side="right")
                share[a:b] = np.where(rest, above / len(ref), 0.0)
            else:
                share[a:b] = np.where(rest, 1.0, 0.0)
            if len(ref) >= MIN_BUDGET_WINDOW:
                # the budget counts what rules and anomalies forwarded (FORWARDED sorts last)
                threshold = ref[min(len(ref) - 1, math.floor((1.0 - budget) * len(ref)))]
                if np.isfinite(threshold):
                    candidate[a:b] = rest & (ranked[a:b] > threshold)
        if exclude is not None and exclude.any():
            candidate &= ~exclude
        flagged = other | self._within_burst_cap(start, other, candidate)
        reference.add(values)
        self._flags.add(flagged.astype(np.float64))
        return flagged, share

    def _within_burst_cap(self, start: int, other: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """The model candidates that stay under the burst cap, in stream order (the rows a rule
        or the anomaly score forwards count, and always go)."""
        share = BURST * self.controller.maximum
        recent, short = self._recent_forwards, self._short_forwards
        accepted = np.zeros(len(candidate), dtype=bool)
        for i in np.flatnonzero(other | candidate).tolist():
            position = start + i
            while recent and recent[0] <= position - BURST_WINDOW:
                recent.popleft()
            while short and short[0] <= position - SHORT_BURST_WINDOW:
                short.popleft()
            # the windows are shorter at the start of the stream: the caps scale with them
            if other[i] or (
                len(recent) < math.floor(share * min(BURST_WINDOW, position + 1))
                and len(short) < math.floor(share * min(SHORT_BURST_WINDOW, position + 1))
            ):
                recent.append(position)
                short.append(position)
                accepted[i] = not other[i]
        return accepted

    @staticmethod
    def stage1_score(
        rule_score: np.ndarray, probability: np.ndarray, flagged: np.ndarray
    ) -> np.ndarray:
        """One number per transaction, consistent with the flag: forwarded transactions score
        in [0.5, 1], the others in [0, 0.5), each ranked by its strongest rule or model signal."""
        strength = np.maximum(rule_score, probability)
        return np.where(flagged, 0.5 + 0.5 * strength, 0.5 * np.minimum(strength, 0.999999))
