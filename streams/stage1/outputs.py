"""Stage 1's outputs of a screened batch: one Kafka record per transaction.

A forwarded transaction becomes a flagged record on ``topic_flagged`` (keyed by card), every
other one a stage-1 decision on ``topic_decisions`` (keyed by transaction id): *approve*, or
*decline* when a `block` rule blocked it. Each output
carries the transaction's event time as its timestamp and the source's ``sent_ms`` header, and
nothing that depends on the wall clock, so a record processed again yields the same bytes.

``encode_outputs`` builds the values of a whole batch in one pass, with the shapes' builders
(``streams.output_schema``) and the per-row lookups of ``ScreenedBatch``'s row-wise methods taken
out of the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException

from streams.errors import BrokerError, TransactionAbortable
from streams.output_schema import stage1_approval_format, stage1_decision
from streams.schema import encode
from streams.settings import Settings
from streams.stage1.delivery import undelivered
from streams.stage1.screen import ScreenedBatch

SENT_MS = "sent_ms"
Headers = list[tuple[str, bytes]]


def sent_ms_header(msg: Any) -> bytes | None:
    """The ``sent_ms`` header of a confluent-kafka message, as the bytes it is re-published
    with (UTF-8 text; invalid bytes replaced, as ``streams.kafka.dlq.header`` reads them)."""
    for key, value in msg.headers() or ():
        if key == SENT_MS:
            if value is None:
                return None
            if isinstance(value, bytes):
                return value if value.isascii() else value.decode("utf-8", "replace").encode()
            return str(value).encode()
    return None


def _items(values: list[float]) -> list[bytes]:
    """orjson's bytes of each value (numbers or None), from one encoding of the list."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


def encode_outputs(out: ScreenedBatch) -> list[bytes]:
    """The output value of every row of ``out``, in row order. Approvals no rule fired on go
    through ``stage1_approval_format`` (the same bytes as the dict, for a third of the cost)."""
    anomaly, probability, rule_score, score = out._values()
    version, card_out, record = out.rules_version, out.card_out, out.flagged_record
    same_card = card_out is str
    dumps, option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    try:
        approval: bytes | None = stage1_approval_format(version)
    except ValueError:
        approval = None
    a_json, p_json, r_json, s_json = (
        _items(anomaly),
        _items(probability),
        _items(rule_score),
        _items(score),
    )
    values: list[bytes] = []
    append = values.append
    blocked = out.blocked.tolist() if out.blocked.any() else None
    rows = zip(out.txs, out.flagged.tolist(), out.fired, out.reasons, out.shadow_fired, strict=True)
    for i, (tx, flagged, fired, reasons, shadow) in enumerate(rows):
        if flagged:
            append(encode(record(i)))
            continue
        card = tx.card_id if same_card else card_out(tx.card_id)
        if approval is not None and not (fired or reasons or shadow or (blocked and blocked[i])):
            sj = s_json[i]
            append(
                approval
                % (dumps(tx.transaction_id), dumps(card), sj, a_json[i], p_json[i], r_json[i], sj)
            )
            continue
        decision = stage1_decision(
            tx.transaction_id,
            card,
            "decline" if blocked is not None and blocked[i] else "approve",
            version,
            fired,
            reasons,
            shadow,
            anomaly[i],
            probability[i],
            rule_score[i],
            score[i],
        )
        append(dumps(decision, option=option))
    return values


def emit(
    settings: Settings,
    produce: Callable[..., None],
    out: ScreenedBatch,
    sources: list[Any],
    sent: list[int],
) -> None:
    """Produce the outputs of ``out`` (``sources``: the messages of its rows); the ``sent_ms`` of
    each approved row is appended to ``sent`` (end-to-end latency). An output librdkafka refuses
    at once (it knows from metadata that the topic is not writable) stops the worker with the
    same one line as a refused delivery (``BrokerError``); the batch's offsets are not stored."""
    flagged_topic, decisions_topic = settings.topic_flagged, settings.topic_decisions
    values = encode_outputs(out)
    flagged = False
    try:
        for tx, flagged, value, msg in zip(
            out.txs, out.flagged.tolist(), values, sources, strict=True
        ):
            h: bytes | None
            carried = msg.headers()
            if (  # the usual headers (as this package's producers write them), read inline
                carried is not None
                and len(carried) == 1
                and carried[0][0] == SENT_MS
                and type(h := carried[0][1]) is bytes
                and h.isascii()
            ):
                pass
            else:
                h = sent_ms_header(msg)
            headers: Headers | None = [(SENT_MS, h)] if h else None
            if flagged:
                produce(
                    flagged_topic, value, tx.card_id.encode(), timestamp=tx.ts_ms, headers=headers
                )
            else:
                produce(
                    decisions_topic,
                    value,
                    tx.transaction_id.encode(),
                    timestamp=tx.ts_ms,
                    headers=headers,
                )
                if h:
                    sent.append(int(h))
    except KafkaException as exc:  # refused at once (e.g. the topic is known not writable)
        err = exc.args[0]
        topic = flagged_topic if flagged else decisions_topic
        line = undelivered({(topic, f"{err.name()} ({err.str()})"): 1})
        if aborts_transaction(exc):
            # the producer's transaction already failed (e.g. a sequence gap after a rebalance,
            # which needs an epoch bump): nothing more can be produced in it
            raise TransactionAbortable(line) from None
        raise BrokerError(line) from None


def aborts_transaction(exc: KafkaException) -> bool:
    """Whether a refused produce means the producer's transaction already failed (e.g. a
    sequence gap after a rebalance, which needs an epoch bump): nothing more can be produced
    in it, and the batch must be aborted and screened again."""
    err = exc.args[0]
    return bool(err.code() == KafkaError._STATE or err.txn_requires_abort())
