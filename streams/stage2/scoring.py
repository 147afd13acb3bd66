"""Stage-2 batch scoring: flagged transactions in, decisions out. Pure logic, no Kafka.

One feature matrix per batch, one booster call (scores and reason codes together), one vectorised
policy call. A challenger model, when set, is scored on the same rows and recorded beside the
champion's decision; it never changes the action. Models are swapped by replacing one reference,
so a batch always sees one consistent (champion, challenger, policy) triple.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from streams.errors import ModelError
from streams.features.names import MODEL_FEATURES
from streams.output_schema import challenger_verdict, stage2_decision
from streams.stage2.model import METADATA_FILE, MODEL_FILE, RiskModel
from streams.stage2.policy import DecisionPolicy

log = logging.getLogger(__name__)

_State = tuple[RiskModel, RiskModel | None, DecisionPolicy]


def feature_matrix(records: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    """(rows, features) float64 matrix in ``names`` order; null values become NaN (missing)."""
    pick = itemgetter(*names) if len(names) > 1 else (lambda f: (f[names[0]],))
    try:
        rows = [pick(r["features"]) for r in records]
    except (KeyError, TypeError):
        for i, r in enumerate(records):
            feats = r.get("features") if isinstance(r, dict) else None
            tx = r.get("transaction_id") if isinstance(r, dict) else None
            if not isinstance(feats, dict):
                raise ModelError(f"record {i} (transaction {tx}) has no features object") from None
            missing = [n for n in names if n not in feats]
            if missing:
                raise ModelError(
                    f"record {i} (transaction {tx}) misses feature(s) {missing}"
                ) from None
        raise
    try:
        return np.array(rows, dtype=np.float64).reshape(len(records), len(names))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"non-numeric feature value in batch: {exc}") from None


class Scorer:
    def __init__(
        self,
        champion: RiskModel,
        policy: DecisionPolicy,
        challenger: RiskModel | None = None,
    ):
        self._state: _State = (champion, challenger, policy)

    @property
    def champion(self) -> RiskModel:
        return self._state[0]

    @property
    def challenger(self) -> RiskModel | None:
        return self._state[1]

    @property
    def policy(self) -> DecisionPolicy:
        return self._state[2]

    def swap(
        self,
        champion: RiskModel | None = None,
        challenger: RiskModel | None = None,
        *,
        policy: DecisionPolicy | None = None,
        drop_challenger: bool = False,
    ) -> None:
        """Replace any of the models or the policy; arguments left None keep the current one."""
        old_champion, old_challenger, old_policy = self._state
        new_challenger = None if drop_challenger else (challenger or old_challenger)
        self._state = (champion or old_champion, new_challenger, policy or old_policy)

    def score_batch(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One decision per flagged record, in input order."""
        batch = self.prepare(records)
        return self.decisions(batch, self.predict(batch))

    # score_batch in three steps, so a worker can run the booster calls (``predict``: no Python
    # objects built, the GIL released inside XGBoost) in a thread while its event loop goes on.
    def prepare(self, records: list[dict[str, Any]]) -> Prepared:
        """The batch's feature matrices and one consistent (champion, challenger, policy)
        snapshot; ModelError when a record lacks a feature or holds a non-numeric one."""
        champion, challenger, _ = state = self._state
        if not records:
            return Prepared(records, state, None, None)
        X = feature_matrix(records, champion.feature_names)
        Xc = None
        if challenger is not None:
            Xc = (
                X
                if challenger.feature_names == champion.feature_names
                else feature_matrix(records, challenger.feature_names)
            )
        return Prepared(records, state, X, Xc)

    @staticmethod
    def predict(batch: Prepared) -> Predicted:
        """The booster calls of a prepared batch: champion scores and exact TreeSHAP
        contributions, challenger scores. Thread-safe (models are immutable once loaded)."""
        champion, challenger, _ = batch.state
        if batch.X is None:
            return Predicted(np.empty(0), np.empty((0, 0)), None)
        scores, contribs = champion.predict(batch.X)
        c_scores = None
        if challenger is not None and batch.Xc is not None:
            c_scores = challenger.score(batch.Xc)  # no contributions: the challenger gives none
        return Predicted(scores, contribs, c_scores)

    @staticmethod
    def decisions(batch: Prepared, predicted: Predicted) -> list[dict[str, Any]]:
        """One decision per record of ``batch``, in input order."""
        champion, challenger, policy = batch.state
        records = batch.records
        if not records or batch.X is None:
            return []
        scores = predicted.scores
        champion_policy = policy.for_model(champion.metadata)
        actions = champion_policy.decide_many(scores)
        reasons = champion.reasons_many(batch.X, predicted.contribs, policy.top_reasons)
        version = champion.version
        challenger_rows: list[dict[str, Any]] | None = None
        if challenger is not None and predicted.c_scores is not None:
            # Python's round (correctly rounded), as every decision has always been written
            c_scores = [round(c, 6) for c in predicted.c_scores.tolist()]
            c_actions = policy.for_model(challenger.metadata).decide_many(predicted.c_scores)
            c_version = challenger.version
            challenger_rows = [
                challenger_verdict(c_version, c, a)
                for c, a in zip(c_scores, c_actions, strict=True)
            ]
        out: list[dict[str, Any]] = []
        rows = zip(records, scores.tolist(), actions, reasons, strict=True)
        for i, (rec, score, action, why) in enumerate(rows):
            stage1 = rec.get("stage1") or {}
            if action == "approve" and rec.get("min_action") == "review":
                action = "review"  # a `review` rule fired at stage 1: at least review
            decision = stage2_decision(
                rec.get("transaction_id"),
                rec.get("card_id"),
                action,
                round(score, 6),
                stage1.get("rules_version"),
                version,
                list(stage1.get("rules_fired") or []),
                list(stage1.get("reasons") or []),
                why,
            )
            if challenger_rows is not None:
                decision["challenger"] = challenger_rows[i]
            if "sent_ms" in rec:
                decision["sent_ms"] = rec["sent_ms"]
            out.append(decision)
        return out


@dataclass(frozen=True)
class Prepared:
    """A batch ready for the booster: its records, the model snapshot that scores it, the
    champion's feature matrix and the challenger's (None for an empty batch / no challenger)."""

    records: list[dict[str, Any]]
    state: _State
    X: np.ndarray | None
    Xc: np.ndarray | None


@dataclass(frozen=True)
class Predicted:
    scores: np.ndarray
    contribs: np.ndarray
    c_scores: np.ndarray | None


class ModelHolder:
    """A model directory watched by a cheap stat check; call ``maybe_reload`` between batches.

    A new model is loaded when ``metadata.json`` or ``model.ubj`` changes (mtime, size, inode).
    It replaces the current one only if it loads, its digest matches its metadata and its
    features equal ``expected_features`` (what stage 1 sends); otherwise the error is logged,
    kept in ``last_error``, and the current model stays. Publish a model by writing
    ``model.ubj`` first and replacing ``metadata.json`` last (``save_model_dir`` does).
    """

    def __init__(
        self,
        path: Path | str,
        expected_features: list[str] | None = None,
        *,
        approx_contribs: bool = False,
    ):
        self.path = Path(path)
        self.expected_features = list(expected_features or MODEL_FEATURES)
        self.approx_contribs = approx_contribs
        self._signature = self._stat()
        model = RiskModel.load(self.path, approx_contribs=approx_contribs)
        model.check_features(self.expected_features)
        self.model: RiskModel = model
        self.last_error: str | None = None

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        sig: list[tuple[int, int, int] | None] = []
        for name in (METADATA_FILE, MODEL_FILE):
            try:
                st = os.stat(self.path / name)
                sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                sig.append(None)
        return tuple(sig)

    def maybe_reload(self) -> bool:
        """True when a new model version was loaded and is now ``self.model``."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            new = RiskModel.load(self.path, approx_contribs=self.approx_contribs)
            new.check_features(self.expected_features)
        except ModelError as exc:
            self.last_error = str(exc)
            log.error(
                "refusing new model in %s: %s; keeping %s", self.path, exc, self.model.version
            )
            return False
        self.last_error = None
        if new.version == self.model.version:
            return False
        log.info("model %s replaced by %s", self.model.version, new.version)
        self.model = new
        return True
