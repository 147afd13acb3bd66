"""The stage-2 risk model: an XGBoost booster in native format plus its metadata.

A model directory holds ``model.ubj`` (the booster), ``metadata.json`` (version, feature names in
order, training and validation windows, metrics, library versions) and ``MODEL_CARD.md``.
Scores and TreeSHAP contributions (reason codes) come from one ``pred_contribs`` call.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from streams.errors import ModelError

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"

# One thread: a stage-2 batch is small (hundreds of rows); threads cost more than they save and
# the result is bit-for-bit reproducible.
PREDICT_THREADS = 1


def sigmoid(margin: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |margin|."""
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * margin))
    return out


def model_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RiskModel:
    """A loaded booster and its metadata; immutable once loaded (safe to share across threads).

    ``approx_contribs=True`` uses Saabas attributions instead of exact TreeSHAP: they too sum to
    the margin, rank features almost alike, and cost about 40 times less on 100-row batches.
    """

    def __init__(
        self,
        booster: xgb.Booster,
        metadata: dict[str, Any],
        path: Path | None = None,
        *,
        approx_contribs: bool = False,
    ):
        names = metadata.get("feature_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ModelError(f"{_where(path)}: metadata has no list of feature_names")
        version = metadata.get("version")
        if not isinstance(version, str) or not version:
            raise ModelError(f"{_where(path)}: metadata has no version string")
        if booster.num_features() != len(names):
            raise ModelError(
                f"{_where(path)}: booster has {booster.num_features()} features, "
                f"metadata lists {len(names)}"
            )
        if booster.feature_names is not None and list(booster.feature_names) != names:
            raise ModelError(f"{_where(path)}: booster feature names differ from metadata's")
        booster.set_param({"nthread": PREDICT_THREADS})
        self.booster = booster
        self.metadata = metadata
        self.path = path
        self.approx_contribs = approx_contribs
        self.version: str = version
        self.feature_names: list[str] = list(names)

    @classmethod
    def load(cls, path: Path | str, *, approx_contribs: bool = False) -> RiskModel:
        """Load a model directory; ModelError names the directory and what is wrong."""
        path = Path(path)
        if not path.is_dir():
            raise ModelError(
                f"model directory not found: {path} ({path.absolute()}; relative paths are read "
                "from the working directory: run from the project's, or set FRAUD_MODEL_DIR)"
            )
        model_file, meta_file = path / MODEL_FILE, path / METADATA_FILE
        for f in (model_file, meta_file):
            if not f.is_file():
                raise ModelError(f"model directory {path} has no {f.name}")
        try:
            metadata = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_file}: not valid JSON metadata: {exc}") from None
        if not isinstance(metadata, dict):
            raise ModelError(f"{meta_file}: metadata must be a JSON object")
        data = model_file.read_bytes()
        expected = metadata.get("model_sha256")
        if expected is not None and expected != model_digest(data):
            raise ModelError(
                f"{model_file}: sha256 differs from metadata's model_sha256 "
                "(model and metadata are from different trainings, or a copy is incomplete)"
            )
        try:
            booster = xgb.Booster(model_file=bytearray(data))
        except xgb.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            raise ModelError(f"{model_file}: not a valid XGBoost model: {first}") from None
        return cls(booster, metadata, path, approx_contribs=approx_contribs)

    # --- features ---------------------------------------------------------------------------
    def check_features(self, names: list[str]) -> None:
        """Raise ModelError unless ``names`` (what stage 1 sends) equal the model's, in order."""
        names = list(names)
        if names == self.feature_names:
            return
        missing = [n for n in self.feature_names if n not in names]
        extra = [n for n in names if n not in self.feature_names]
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"extra {extra}")
        if not problems:
            problems.append("same features in a different order")
        raise ModelError(
            f"model {self.version} expects features {self.feature_names}; "
            f"stage 1 sends {names} ({'; '.join(problems)})"
        )

    # --- scoring ----------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, contributions) for a (rows, features) matrix in the model's feature order.

        ``contributions`` has one column per feature plus the bias last; a row's sum is the raw
        margin and its score is sigmoid(margin). NaN means missing, as in training.
        """
        X = self._matrix(X)
        if X.shape[0] == 0:
            return np.empty(0), np.empty((0, X.shape[1] + 1))
        dm = xgb.DMatrix(X, feature_names=self.feature_names, nthread=PREDICT_THREADS)
        raw = self.booster.predict(dm, pred_contribs=True, approx_contribs=self.approx_contribs)
        contribs = np.asarray(raw, dtype=np.float64)
        scores = sigmoid(contribs.sum(axis=1))
        return scores, contribs

    def score(self, X: np.ndarray) -> np.ndarray:
        """Scores only (no contributions): one ``inplace_predict``, for a challenger."""
        X = self._matrix(X)
        if X.shape[0] == 0:
            return np.empty(0)
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)

    def _matrix(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ModelError(
                f"model {self.version} needs a (rows, {len(self.feature_names)}) matrix, "
                f"got shape {X.shape}"
            )
        return X

    def reasons(
        self, X_row: np.ndarray, contribs_row: np.ndarray, top_k: int = 3
    ) -> list[dict[str, Any]]:
        """The ``top_k`` features that pushed this row's score up most, largest first."""
        return self.reasons_many(
            np.asarray(X_row).reshape(1, -1), np.asarray(contribs_row).reshape(1, -1), top_k
        )[0]

    def reasons_many(
        self, X: np.ndarray, contribs: np.ndarray, top_k: int = 3
    ) -> list[list[dict[str, Any]]]:
        """``reasons`` for every row of a batch (one argsort for the whole batch).

        A missing (NaN) feature value is reported as None, so the decision stays valid JSON.
        """
        n = len(self.feature_names)
        if top_k <= 0 or len(X) == 0:
            return [[] for _ in range(len(X))]
        feats = contribs[:, :n]  # drop the bias column
        order = np.argsort(-feats, axis=1, kind="stable")[:, :top_k]
        top = np.round(np.take_along_axis(feats, order, axis=1), 6)
        values = np.take_along_axis(np.asarray(X, dtype=np.float64), order, axis=1)
        names = self.feature_names
        out: list[list[dict[str, Any]]] = []
        rows = zip(order.tolist(), top.tolist(), values.tolist(), strict=True)
        for idx_row, c_row, v_row in rows:
            out.append(
                [
                    {"feature": names[i], "value": None if v != v else v, "contribution": c}
                    for i, c, v in zip(idx_row, c_row, v_row, strict=True)
                    if c > 0.0
                ]
            )
        return out

    def __repr__(self) -> str:
        return f"RiskModel({self.version!r}, {len(self.feature_names)} features)"


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "model"
