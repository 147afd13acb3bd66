"""The stage-2 model versions: the champion and challenger directories, reloaded between
batches, swapped into the scorer, and reported when either version changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from streams.stage2.model import RiskModel
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import ModelHolder, Scorer

OnChange = Callable[[str | None, str | None], None]


class Watched(Protocol):
    """A model directory (``ModelHolder``): its current model, reloaded when it changed."""

    model: RiskModel

    def maybe_reload(self) -> bool: ...


class ModelVersions:
    """Keeps ``scorer`` on the latest models of ``champion`` and ``challenger``;
    ``on_change(champion_version, challenger_version)`` runs on the first ``refresh`` and
    whenever a version changes (metrics, drift reset)."""

    def __init__(
        self,
        scorer: Scorer,
        champion: Watched,
        challenger: Watched | None,
        on_change: OnChange,
    ):
        self.scorer = scorer
        self.champion = champion
        self.challenger = challenger
        self.on_change = on_change
        self.current: tuple[str | None, str | None] = (None, None)  # nothing reported yet

    @classmethod
    def load(
        cls, model_dir: Path, challenger_dir: Path | None, policy_file: Path, on_change: OnChange
    ) -> ModelVersions:
        """The model directories (the challenger's optional) and a scorer over their models."""
        champion = ModelHolder(model_dir)
        challenger = ModelHolder(challenger_dir) if challenger_dir else None
        scorer = Scorer(
            champion.model,
            DecisionPolicy.load(policy_file),
            challenger.model if challenger else None,
        )
        return cls(scorer, champion, challenger, on_change)

    @property
    def champion_version(self) -> str:
        """The champion version last reported ("" before the first ``refresh``)."""
        return self.current[0] or ""

    def refresh(self) -> None:
        """Before a batch: load changed model directories into the scorer."""
        if self.champion.maybe_reload():
            self.scorer.swap(champion=self.champion.model)
        if self.challenger is not None and self.challenger.maybe_reload():
            self.scorer.swap(challenger=self.challenger.model)
        versions = (
            self.champion.model.version,
            self.challenger.model.version if self.challenger is not None else None,
        )
        if versions != self.current:
            self.current = versions
            self.on_change(*versions)
