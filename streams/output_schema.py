"""The shapes of what fraudstream publishes, defined once: decisions (``topic_decisions``, from
both stages) and flagged records (``topic_flagged``, stage 1 to stage 2).

The pydantic models below are the schema: their field order is the key order of every record
written, and ``json_schemas`` derives the JSON Schemas published in ``schemas/`` for downstream
consumers (``python -m streams.output_schema`` rewrites them; a test keeps them equal). The
record builders (``stage1_decision``, ``stage2_decision``, ``stage1_evidence``,
``flagged_record``) are the only code that writes these shapes: plain dicts, built with their
keys in the models' order (checked at import), which ``orjson`` encodes. Stage 1 calls them for
nearly every transaction, so they take positional values and build one dict literal each.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from streams.features.names import MODEL_FEATURES

Action = Literal["approve", "review", "decline"]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Reason(_Shape):
    """One of the features that raised the stage-2 score most (exact TreeSHAP)."""

    feature: str
    value: float | None  # None when the feature was missing (NaN)
    contribution: float


class Stage1Evidence(_Shape):
    """Why stage 1 treated a transaction as it did."""

    rules_version: str
    rules_fired: list[str]
    reasons: list[str]
    shadow_rules_fired: list[str]
    anomaly_score: float
    fraud_probability: float
    rule_score: float
    score: float


class Challenger(_Shape):
    """The challenger model's verdict beside the champion's (recorded, never acted on)."""

    model_version: str | None
    score: float
    action: Action


class CardContext(_Shape):
    """The card's stage-2 history up to this transaction (event time)."""

    flags_30d: int
    declines_30d: int
    previous_action: Action | None


class Decision(_Shape):
    """A decision on ``topic_decisions``, keyed by transaction id: stage 1 approves what it
    does not forward and declines what a `block` rule blocks (with its evidence), stage 2
    decides the rest."""

    transaction_id: str
    card_id: str
    action: Action
    score: float
    stage: Literal[1, 2]
    rules_version: str | None
    model_version: str | None
    rules: list[str]
    rule_reasons: list[str]
    reasons: list[Reason]
    stage1: Stage1Evidence | None = None
    challenger: Challenger | None = None
    card_context: CardContext | None = None


class FlaggedRecord(_Shape):
    """A transaction stage 1 forwards to stage 2 on ``topic_flagged``, keyed by card."""

    transaction_id: str
    card_id: str
    terminal_id: str
    amount: float
    ts_ms: int
    features: dict[str, float | None]
    stage1: Stage1Evidence
    # the least stage 2 may decide (`review` when a `review` rule fired), None for no floor
    min_action: Action | None
    transaction: dict[str, Any]  # the transaction as it arrived, extra fields included


# --- the builders ---------------------------------------------------------------------------
def stage1_evidence(
    rules_version: str,
    fired: list[str],
    reasons: list[str],
    shadow: list[str],
    anomaly: float,
    probability: float,
    rule_score: float,
    score: float,
) -> dict[str, Any]:
    return {
        "rules_version": rules_version,
        "rules_fired": fired,
        "reasons": reasons,
        "shadow_rules_fired": shadow,
        "anomaly_score": anomaly,
        "fraud_probability": probability,
        "rule_score": rule_score,
        "score": score,
    }


def stage1_decision(
    transaction_id: str,
    card_id: str,
    action: str,
    rules_version: str,
    fired: list[str],
    reasons: list[str],
    shadow: list[str],
    anomaly: float,
    probability: float,
    rule_score: float,
    score: float,
) -> dict[str, Any]:
    """Stage 1's decision for a transaction it does not forward (``approve``, or ``decline``
    when a `block` rule fired), with its evidence. Written for nearly every transaction, so the
    evidence (``stage1_evidence``'s shape) is built in the same call; ``_check_builders`` holds
    both to the models."""
    return {
        "transaction_id": transaction_id,
        "card_id": card_id,
        "action": action,
        "score": score,
        "stage": 1,
        "rules_version": rules_version,
        "model_version": None,
        "rules": fired,
        "rule_reasons": reasons,
        "reasons": [],
        "stage1": {
            "rules_version": rules_version,
            "rules_fired": fired,
            "reasons": reasons,
            "shadow_rules_fired": shadow,
            "anomaly_score": anomaly,
            "fraud_probability": probability,
            "rule_score": rule_score,
            "score": score,
        },
    }


APPROVAL_SLOTS = (
    "transaction_id",
    "card_id",
    "score",
    "anomaly",
    "probability",
    "rule_score",
    "score",
)
"""The values ``stage1_approval_format`` takes, in order (the score appears twice)."""
_SLOT = re.compile(rb'"\\u0001(\w+)"')  # a slot's mark, as orjson writes it


@functools.lru_cache(maxsize=16)  # one per rules version in use
def stage1_approval_format(rules_version: str) -> bytes:
    """``stage1_decision`` of an approval no rule fired on (nearly every transaction) as a bytes
    %-format: ``fmt % values``, ``values`` the orjson bytes of each of ``APPROVAL_SLOTS``, is
    byte for byte orjson's encoding of that decision (a test holds them equal), for a third of
    the cost of building and encoding its dict. Derived from ``stage1_decision`` itself, so the
    two cannot drift apart."""
    mark = {name: f"\x01{name}" for name in APPROVAL_SLOTS}
    decision = stage1_decision(
        mark["transaction_id"],
        mark["card_id"],
        "approve",
        rules_version,
        [],
        [],
        [],
        mark["anomaly"],  # type: ignore[arg-type]  # marks where the numbers go
        mark["probability"],  # type: ignore[arg-type]
        mark["rule_score"],  # type: ignore[arg-type]
        mark["score"],  # type: ignore[arg-type]
    )
    raw = orjson.dumps(decision).replace(b"%", b"%%")
    found = tuple(m.group(1).decode() for m in _SLOT.finditer(raw))
    if found != APPROVAL_SLOTS:
        raise ValueError(f"rules version {rules_version!r}: the approval format is ambiguous")
    return _SLOT.sub(b"%s", raw)


def stage2_decision(
    transaction_id: Any,
    card_id: Any,
    action: str,
    score: float,
    rules_version: str | None,
    model_version: str | None,
    fired: list[str],
    rule_reasons: list[str],
    reasons: list[dict[str, Any]],
) -> dict[str, Any]:
    """Stage 2's decision; ``challenger`` and ``card_context`` are added after it, in that
    order, when there are."""
    return {
        "transaction_id": transaction_id,
        "card_id": card_id,
        "action": action,
        "score": score,
        "stage": 2,
        "rules_version": rules_version,
        "model_version": model_version,
        "rules": fired,
        "rule_reasons": rule_reasons,
        "reasons": reasons,
    }


def challenger_verdict(model_version: str | None, score: float, action: str) -> dict[str, Any]:
    return {"model_version": model_version, "score": score, "action": action}


def flagged_record(
    transaction_id: str,
    card_id: str,
    terminal_id: str,
    amount: float,
    ts_ms: int,
    features: list[float],
    evidence: dict[str, Any],
    min_action: str | None,
    transaction: dict[str, Any],
) -> dict[str, Any]:
    """What stage 1 sends to stage 2; ``features``: values in ``MODEL_FEATURES`` order."""
    return {
        "transaction_id": transaction_id,
        "card_id": card_id,
        "terminal_id": terminal_id,
        "amount": amount,
        "ts_ms": ts_ms,
        "features": dict(zip(MODEL_FEATURES, features, strict=True)),
        "stage1": evidence,
        "min_action": min_action,
        "transaction": transaction,
    }


def _check_builders() -> None:
    """Each builder writes exactly its model's keys, in its model's order."""
    ev = stage1_evidence("v", [], [], [], 0.0, 0.0, 0.0, 0.0)
    built: dict[type[BaseModel], dict[str, Any]] = {
        Stage1Evidence: ev,
        Challenger: challenger_verdict(None, 0.0, "approve"),
        FlaggedRecord: flagged_record(
            "t", "c", "m", 1.0, 0, [0.0] * len(MODEL_FEATURES), ev, None, {}
        ),
    }
    decision_keys = list(Decision.model_fields)
    for model, value in built.items():
        if list(value) != list(model.model_fields):
            raise ImportError(f"{model.__name__}: the builder's keys are not the schema's")
    stage2 = [*stage2_decision("t", "c", "approve", 0.0, None, None, [], [], []), "challenger"]
    approve = stage1_decision("t", "c", "approve", "v", [], [], [], 0.0, 0.0, 0.0, 0.0)
    if list(approve) != decision_keys[:11] or approve["stage1"] != ev:
        raise ImportError("stage1_decision: keys are not the Decision schema's")
    if [*stage2, "card_context"] != [k for k in decision_keys if k != "stage1"]:
        raise ImportError("stage2_decision: keys are not the Decision schema's")


_check_builders()


# --- the published JSON Schemas ---------------------------------------------------------------
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
PUBLISHED: dict[str, type[BaseModel]] = {
    "decision.schema.json": Decision,
    "flagged.schema.json": FlaggedRecord,
}


def json_schemas() -> dict[str, str]:
    """File name -> JSON Schema text of each published shape."""
    out = {}
    for name, model in PUBLISHED.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **model.model_json_schema(),
        }
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in json_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas():
        print(path)
