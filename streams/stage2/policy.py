"""The decision policy: a risk score in [0, 1] becomes approve, review or decline.

Thresholds are inclusive lower bounds (``config/policy.yaml`` explains each one)::

    score < review  -> approve;   review <= score < decline -> review;   score >= decline -> decline

A score that is not a number (never produced by a healthy model) goes to review: it is neither
approved nor declined without a person looking at it.

With ``thresholds: model`` the two thresholds come from the scoring model's metadata
(``policy``: set by ``train`` on its validation window from an analyst capacity, see
``streams.training.policy``), so they follow every retrain; the file's numbers are then only the
fallback for a model that records none. ``thresholds: fixed`` (the default) uses the file's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from streams.errors import ConfigError

Action = Literal["approve", "review", "decline"]
ACTIONS: tuple[Action, ...] = ("approve", "review", "decline")
_KEYS = {"review_threshold", "decline_threshold", "top_reasons", "thresholds"}
_MODES = ("fixed", "model")
log = logging.getLogger(__name__)
_warned: set[str] = set()  # model versions already reported as recording no thresholds


@dataclass(frozen=True)
class DecisionPolicy:
    review_threshold: float = 0.3
    decline_threshold: float = 0.8
    top_reasons: int = 3
    from_model: bool = False  # thresholds from the model's metadata (these are the fallback)

    def __post_init__(self) -> None:
        problems = _problems(self.review_threshold, self.decline_threshold, self.top_reasons)
        if problems:
            raise ConfigError("invalid decision policy: " + "; ".join(problems))

    @classmethod
    def load(cls, path: Path | str) -> DecisionPolicy:
        """Read a policy YAML file; ConfigError names the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"policy file not found: {path}")
        try:
            data: Any = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read policy YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a policy must be a mapping of thresholds")
        unknown = sorted(set(map(str, data)) - _KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; expected {sorted(_KEYS)}")
        for key in ("review_threshold", "decline_threshold"):
            if key not in data:
                raise ConfigError(f"{path}: missing {key}")
        review, decline = data["review_threshold"], data["decline_threshold"]
        top = data.get("top_reasons", 3)
        mode = data.get("thresholds", "fixed")
        problems = _problems(review, decline, top)
        if mode not in _MODES:
            problems.append(f"thresholds must be one of {', '.join(_MODES)}, got {mode!r}")
        if problems:
            raise ConfigError(f"{path}: " + "; ".join(problems))
        return cls(float(review), float(decline), int(top), from_model=mode == "model")

    def for_model(self, metadata: dict[str, Any]) -> DecisionPolicy:
        """The fixed policy a model's decisions use: this one, or with ``from_model`` the
        thresholds its metadata records (``policy``); this one's when it records none."""
        if not self.from_model:
            return self
        recorded = metadata.get("policy")
        if isinstance(recorded, dict):
            review = recorded.get("review_threshold")
            decline = recorded.get("decline_threshold")
            if not _problems(review, decline, self.top_reasons):
                return replace(
                    self,
                    review_threshold=float(review),  # type: ignore[arg-type]
                    decline_threshold=float(decline),  # type: ignore[arg-type]
                    from_model=False,
                )
        version = str(metadata.get("version"))
        if version not in _warned:
            _warned.add(version)
            log.warning(
                "model %s records no valid policy thresholds; using the policy file's (%s, %s)",
                version,
                self.review_threshold,
                self.decline_threshold,
            )
        return replace(self, from_model=False)

    def decide(self, score: float) -> Action:
        if score >= self.decline_threshold:
            return "decline"
        if score >= self.review_threshold:
            return "review"
        if score < self.review_threshold:
            return "approve"
        return "review"  # NaN

    def decide_many(self, scores: np.ndarray) -> list[Action]:
        """``decide`` for every score of a batch, vectorised."""
        s = np.asarray(scores, dtype=np.float64)
        idx = np.where(s >= self.decline_threshold, 2, np.where(s >= self.review_threshold, 1, 0))
        idx[np.isnan(s)] = 1
        return [ACTIONS[i] for i in idx.tolist()]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _problems(review: Any, decline: Any, top: Any) -> list[str]:
    problems = []
    for name, value in (("review_threshold", review), ("decline_threshold", decline)):
        if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
            problems.append(f"{name} must be a number in [0, 1], got {value!r}")
    if not problems and float(review) > float(decline):
        problems.append(
            f"review_threshold ({review}) must not exceed decline_threshold ({decline})"
        )
    if not isinstance(top, int) or isinstance(top, bool) or top < 0:
        problems.append(f"top_reasons must be a whole number >= 0, got {top!r}")
    return problems
