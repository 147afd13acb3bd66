"""The stage-1 Kafka worker: a thin confluent-kafka loop around the pure ``Screener``.

At-least-once: offsets are stored only after every output of the batch (flagged records,
decisions, dead letters) has been acknowledged by the broker. Outputs are keyed and idempotent:
decisions by transaction id, flagged records by card.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from streams.errors import BrokerError, MessageError
from streams.kafka import clients
from streams.kafka.dlq import dead_letter, header
from streams.logging_setup import where
from streams.rules.reload import RuleReloader
from streams.schema import Transaction, decode, encode
from streams.settings import Settings
from streams.stage1.screen import Screener
from streams.stage1.telemetry import Stage1Telemetry

log = logging.getLogger(__name__)
STAGE = "stage1"


@dataclass
class Stage1Stats:
    consumed: int = 0
    flagged: int = 0
    approved: int = 0
    dead_letters: int = 0
    labels: int = 0
    batches: int = 0
    assigned: list[int] = field(default_factory=list)


def sent_ms(msg: Any) -> bytes | None:
    value = header(msg, "sent_ms")
    return value.encode() if value is not None else None


class Stage1Worker:
    def __init__(self, settings: Settings, on_batch: Callable[[Any], None] | None = None):
        self.settings = settings
        self.telemetry: Stage1Telemetry | None = None
        self.reloader = RuleReloader(
            settings.rules_dir,
            watch=settings.rules_reload,
            on_error=lambda exc: self._reloaded(False),
        )
        self.screener = Screener.from_settings(settings, self.reloader.current())
        self.telemetry = Stage1Telemetry(self.screener.rules)
        self.stats = Stage1Stats()
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self._failed_delivery: list[str] = []

    # --- Kafka plumbing -----------------------------------------------------------------
    def _open(self) -> None:
        s = self.settings
        assert self.telemetry is not None
        self.producer = clients.producer(s, error_cb=self.telemetry.broker_error)
        self.consumer = clients.consumer(s, s.stage1_group, error_cb=self.telemetry.broker_error)
        self.consumer.subscribe(
            [s.topic_transactions], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        # Every worker needs every terminal: the labels table reads all partitions, no group.
        self.labels = clients.consumer(
            s, f"{s.stage1_group}-labels", **{"enable.auto.commit": False}
        )
        meta = self.labels.list_topics(s.topic_labels, timeout=10).topics.get(s.topic_labels)
        parts = sorted(meta.partitions) if meta and not meta.error else []
        self.labels.assign([TopicPartition(s.topic_labels, p, OFFSET_BEGINNING) for p in parts])

    def _reloaded(self, ok: bool) -> None:
        if self.telemetry is not None:
            self.telemetry.reload(ok)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.stats.assigned = sorted(set(self.stats.assigned) | {p.partition for p in partitions})
        log.info("assigned %s", [where(p.topic, p.partition, p.offset) for p in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {p.partition for p in partitions}
        self.stats.assigned = [p for p in self.stats.assigned if p not in gone]
        log.info("revoked %s", [where(p.topic, p.partition, p.offset) for p in partitions])

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed_delivery.append(f"{msg.topic()}: {err.str()}")

    # --- the loop -----------------------------------------------------------------------
    def drain_labels(self, limit: int = 50_000) -> int:
        msgs = self.labels.consume(num_messages=limit, timeout=0)
        learn = self.screener.learn_label
        before = self.screener.classifier.learned
        n = 0
        for msg in msgs:
            if msg.error():
                continue
            try:
                label = decode_label(msg.value())
            except MessageError as exc:
                log.warning(
                    "bad label at %s: %s", where(msg.topic(), msg.partition(), msg.offset()), exc
                )
                continue
            learn(*label)
            n += 1
        self.stats.labels += n
        if self.telemetry is not None:
            self.telemetry.labels(n, self.screener.classifier.learned - before)
        return n

    def process(self, msgs: list[Any]) -> None:
        started = time.perf_counter()
        s, produce = self.settings, self.producer.produce
        out = None
        sent: list[int] = []
        txs: list[Transaction] = []
        sources: list[Message] = []
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", msg.error().str())
                continue
            try:
                txs.append(decode(msg.value()))
                sources.append(msg)
            except MessageError as exc:
                letter = dead_letter(msg, STAGE, exc.kind, str(exc))
                produce(
                    s.topic_dlq,
                    letter.value,
                    letter.key,
                    headers=letter.headers,
                    on_delivery=self._delivered,
                )
                self.stats.dead_letters += 1
                if self.telemetry is not None:
                    self.telemetry.dead_letter(exc.kind)
                log.warning(
                    "dead letter %s: %s: %s",
                    where(msg.topic(), msg.partition(), msg.offset()),
                    exc.kind,
                    exc,
                )
        if txs:
            out = self.screener.screen(txs)
            for i, flagged in enumerate(out.flagged.tolist()):
                h = sent_ms(sources[i])
                headers: list[tuple[str, str | bytes | None]] | None = (
                    [("sent_ms", h)] if h else None
                )
                tx = txs[i]
                if flagged:
                    produce(
                        s.topic_flagged,
                        encode(out.flagged_record(i)),
                        tx.card_id.encode(),
                        timestamp=tx.ts_ms,
                        headers=headers,
                        on_delivery=self._delivered,
                    )
                else:
                    produce(
                        s.topic_decisions,
                        encode(out.approve_decision(i)),
                        tx.transaction_id.encode(),
                        timestamp=tx.ts_ms,
                        headers=headers,
                        on_delivery=self._delivered,
                    )
                    if h:
                        sent.append(int(h))
            n_flagged = int(out.flagged.sum())
            self.stats.flagged += n_flagged
            self.stats.approved += len(txs) - n_flagged
            if self.on_batch is not None:
                self.on_batch(out)
        self._commit(msgs)
        if self.telemetry is not None:
            self.telemetry.batch(len(msgs), out, sent, time.perf_counter() - started)

    def _commit(self, msgs: list[Any]) -> None:
        remaining = self.producer.flush(30)
        if remaining or self._failed_delivery:
            errors, self._failed_delivery = self._failed_delivery, []
            raise BrokerError(f"{remaining} outputs undelivered; errors: {errors[:3]}")
        last: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if not msg.error():
                last[(msg.topic(), msg.partition())] = msg.offset()
        if last:
            self.consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            )
        self.stats.consumed += len(msgs)
        self.stats.batches += 1

    def run(
        self, max_messages: int | None = None, idle_timeout_s: float | None = None
    ) -> Stage1Stats:
        """Run until stopped (``stop_event``), ``max_messages`` consumed, or idle too long."""
        self._open()
        s = self.settings
        wait = s.stage1_batch_wait_ms / 1000
        last_data = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if self.reloader.maybe_reload():
                    self.screener.rules = self.reloader.current()
                    self._reloaded(True)
                    if self.telemetry is not None:
                        self.telemetry.rules_changed(self.screener.rules)
                    log.info("rule set %s swapped in", self.screener.rules.version)
                self.drain_labels()
                msgs = self.consumer.consume(num_messages=s.stage1_batch_size, timeout=wait)
                if msgs:
                    self.process(msgs)
                    last_data = time.monotonic()
                    if self.telemetry is not None and self.stats.assigned:
                        self.telemetry.lag(self.consumer, s.topic_transactions, self.stats.assigned)
                elif idle_timeout_s is not None and time.monotonic() - last_data > idle_timeout_s:
                    break
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        try:
            self.producer.flush(10)
            self.consumer.commit(asynchronous=False)
        except Exception as exc:  # nothing stored yet, or broker gone: offsets stay as they were
            log.debug("final commit skipped: %s", exc)
        self.consumer.close()
        self.labels.close()
        self.reloader.close()


def decode_label(value: bytes | None) -> tuple[str, str, int, int]:
    """A label message to (transaction_id, terminal_id, ts_ms, fraud)."""
    import orjson

    from streams.schema import parse_timestamp

    try:
        obj = orjson.loads(value or b"")
        return (
            str(obj["transaction_id"]),
            str(obj["terminal_id"]),
            parse_timestamp(obj["timestamp"]),
            int(obj["fraud"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"bad label: {exc}") from None
