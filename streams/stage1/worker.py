"""The stage-1 Kafka worker: a thin confluent-kafka loop around per-partition ``Screener``s.

Delivery
    *At-least-once* (default): offsets are stored only after every output of the batch (flagged
    records, decisions, dead letters) has been acknowledged by the broker; librdkafka commits the
    stored offsets every second, on revoke and on close. Outputs are keyed (decisions by transaction
    id, flagged records by card) and carry no wall-clock value, so a record processed again after
    a crash yields the same output bytes (see *Determinism*).
    *Exactly-once* (``--exactly-once``): one Kafka transaction per batch holds its outputs and its
    consumed offsets (``send_offsets_to_transaction``); readers use ``read_committed``. The
    transactional id is stable per host (``<group>-<hostname>``, or ``FRAUD_TRANSACTIONAL_ID``), so
    a restarted worker fences its predecessor and aborts its open transaction at once. When a
    transaction must be aborted, the batch's partitions are rewound: state rebuilt to the
    committed offset, consumer seeked back.

State
    Per partition (card windows, anomaly model; ``streams.recovery.state``): on assignment the
    worker reads the partition from the beginning up to the committed offset through the screener
    without emitting, then processes it. Shared (terminal label table, online classifier): fed from
    the labels topic, which every worker reads from the beginning.

Determinism
    Per-partition state is a function of the partition's records in offset order, so a rebuilt
    partition continues exactly as an uninterrupted one. The label-fed parts are not: when a label
    reaches the worker relative to the transactions (and, for the classifier, which partitions the
    worker owned when the transaction was screened) changes terminal-risk features and the online
    probability. Without label traffic, decisions are a pure function of the partition history.

Broker outages
    At start the worker polls the broker with backoff until it answers. During a run librdkafka
    reconnects by itself; outputs wait in the producer (no local message timeout), the batch's
    offsets are stored only once they are delivered, and ``fraud_broker_up`` (metric) and the log
    report the outage and the recovery.

Shutdown
    ``stop_event`` (SIGTERM/SIGINT in the CLI): the current batch is finished, outputs flushed,
    offsets committed, and the consumer leaves the group.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from streams.errors import BrokerError, MessageError
from streams.kafka import clients
from streams.kafka.dlq import PREFIX, dead_letter, header
from streams.logging_setup import where
from streams.observability import metrics as m
from streams.recovery.broker import wait_for_broker
from streams.recovery.state import (
    PartitionedScreener,
    decode_transaction,
    merge_batches,
    rebuild_partitions,
)
from streams.rules.reload import RuleReloader
from streams.schema import Transaction, encode
from streams.settings import Settings
from streams.stage1.screen import ScreenedBatch
from streams.stage1.telemetry import Stage1Telemetry

log = logging.getLogger(__name__)
STAGE = "stage1"
DLQ_VALUE_LIMIT = 512 * 1024
"""A dead letter's value is cut to this many bytes (headers ``dlq.value.truncated`` = original
size, ``dlq.value.sha256``), so it fits the default 1 MB ``message.max.bytes`` of a real broker."""
STOP_GRACE_S = 15.0
"""After a stop request, how long undelivered outputs may wait for the broker before giving up."""
_DOWN_CODES = {KafkaError._ALL_BROKERS_DOWN}


@dataclass
class Stage1Stats:
    consumed: int = 0
    flagged: int = 0
    approved: int = 0
    dead_letters: int = 0
    labels: int = 0
    batches: int = 0
    assigned: list[int] = field(default_factory=list)
    rebuilt: dict[int, int] = field(default_factory=dict)  # partition -> records replayed
    rewinds: int = 0
    outages: int = 0


def sent_ms(msg: Any) -> bytes | None:
    value = header(msg, "sent_ms")
    return value.encode() if value is not None else None


def transactional_id(settings: Settings) -> str:
    """Stable per host, so a restarted worker fences its predecessor (override per worker with
    ``FRAUD_TRANSACTIONAL_ID`` when several run on one host)."""
    explicit = getattr(settings, "transactional_id", None) or os.environ.get(
        "FRAUD_TRANSACTIONAL_ID"
    )
    return str(explicit or f"{settings.stage1_group}-{socket.gethostname()}")


class Stage1Worker:
    def __init__(self, settings: Settings, on_batch: Callable[[Any], None] | None = None):
        self.settings = settings
        self.telemetry: Stage1Telemetry | None = None
        self.reloader = RuleReloader(
            settings.rules_dir,
            watch=settings.rules_reload,
            on_error=lambda exc: self._reloaded(False),
        )
        self.state = PartitionedScreener(settings, self.reloader.current())
        self.telemetry = Stage1Telemetry(self.state.rules)
        self.stats = Stage1Stats()
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self.exactly_once = settings.exactly_once
        self._failed_delivery: list[str] = []
        self._broker_up = True
        self._probe_at = 0.0
        self._in_transaction = False

    # --- Kafka plumbing -----------------------------------------------------------------
    def _open(self) -> None:
        s = self.settings
        if self.exactly_once:
            produce_conf: dict[str, Any] = {
                "transactional.id": transactional_id(s),
                "transaction.timeout.ms": 60_000,
            }
        else:
            produce_conf = {"message.timeout.ms": 0}  # outputs wait for the broker, however long
        self.producer = clients.producer(s, error_cb=self._broker_error, **produce_conf)
        if self.exactly_once:
            tid = transactional_id(s)
            log.info("exactly-once: initialising transactions as %s", tid)
            self._retry("init transactions", lambda: self.producer.init_transactions(30))
            log.info("exactly-once: transactions ready")
        consume_conf: dict[str, Any] = {
            "error_cb": self._broker_error,
            "isolation.level": "read_committed",
        }
        if self.exactly_once:
            consume_conf["enable.auto.commit"] = False
        else:  # stored offsets reach the broker within a second: less to redo after a crash
            consume_conf["auto.commit.interval.ms"] = 1000
        self.consumer = clients.consumer(s, s.stage1_group, **consume_conf)
        log.info("joining group %s on %s", s.stage1_group, s.topic_transactions)
        self.consumer.subscribe(
            [s.topic_transactions],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        # Every worker needs every terminal: the labels table reads all partitions, no group.
        self.labels = clients.consumer(
            s, f"{s.stage1_group}-labels", **{"enable.auto.commit": False}
        )
        meta = self.labels.list_topics(s.topic_labels, timeout=10).topics.get(s.topic_labels)
        parts = sorted(meta.partitions) if meta and not meta.error else []
        self.labels.assign([TopicPartition(s.topic_labels, p, OFFSET_BEGINNING) for p in parts])
        self._label_parts = parts
        self._label_time: dict[int, int] = {}  # last record timestamp read per label partition

    def _reloaded(self, ok: bool) -> None:
        if self.telemetry is not None:
            self.telemetry.reload(ok)

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()`` until it succeeds, with backoff, while the broker is away."""
        delay = 0.5
        while True:
            try:
                return call()
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.code() in (KafkaError._TIMED_OUT,)):
                    raise
                if self.stop_event.is_set():
                    raise BrokerError(f"{what}: {err.str()} (stopping)") from None
                self._set_broker(False, f"{what}: {err.str()}")
                self.stop_event.wait(delay)
                delay = min(delay * 2, 10.0)

    def _committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        result: list[TopicPartition] = self._retry(
            "committed offsets", lambda: self.consumer.committed(tps, timeout=10)
        )
        return result

    def _rebuild(self, committed: list[TopicPartition]) -> None:
        """Fresh state for each partition, replayed up to its committed offset."""
        if not committed:
            return
        started = time.perf_counter()
        topic = committed[0].topic
        ends = {tp.partition: max(tp.offset, 0) for tp in committed}
        screeners = {p: self.state.reset(p) for p in ends}
        rebuilt = rebuild_partitions(self.settings, screeners, topic, ends, self.stop_event)
        if self.stop_event.is_set():  # stopped mid-rebuild: process none of these partitions
            for p in ends:
                self.state.drop(p)
            log.info("stopping: rebuild of %s abandoned", sorted(ends))
            return
        self.stats.rebuilt.update(rebuilt)
        for p, n in sorted(rebuilt.items()):
            log.info(
                "%s: state rebuilt from %d records before offset %d",
                where(topic, p, None),
                n,
                ends[p],
            )
        log.info("rebuild took %.2fs", time.perf_counter() - started)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [where(p.topic, p.partition, p.offset) for p in partitions])
        if partitions:
            self._rebuild(self._committed(partitions))
        self.stats.assigned = sorted(set(self.stats.assigned) | {p.partition for p in partitions})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if not self.exactly_once:
            try:  # hand over exactly what was delivered
                self.consumer.commit(asynchronous=False)
            except KafkaException as exc:
                log.debug("commit on revoke: %s", exc)
        self._forget(partitions)
        log.info("revoked %s", [where(p.topic, p.partition, p.offset) for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        log.warning("lost %s", [where(p.topic, p.partition, p.offset) for p in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {p.partition for p in partitions}
        for p in gone:
            self.state.drop(p)
        self.stats.assigned = [p for p in self.stats.assigned if p not in gone]

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed_delivery.append(f"{msg.topic()}: {err.str()}")

    # --- broker health ------------------------------------------------------------------
    def _broker_error(self, err: KafkaError) -> None:
        if err.code() in _DOWN_CODES:
            self._set_broker(False, err.str())
        else:
            log.warning("kafka: %s", err.str())

    def _set_broker(self, up: bool, why: str = "") -> None:
        if up != self._broker_up:
            if up:
                log.warning("broker reachable again; carrying on")
            else:
                self.stats.outages += 1
                log.warning("broker unreachable (%s); waiting for it", why)
        self._broker_up = up
        m.set_broker_up(STAGE, up)

    def _probe(self) -> None:
        """While the broker is marked down, ask it for metadata every 2 s."""
        now = time.monotonic()
        if self._broker_up or now - self._probe_at < 2.0:
            return
        self._probe_at = now
        try:
            self.consumer.list_topics(self.settings.topic_transactions, timeout=1.0)
        except KafkaException:
            return
        self._set_broker(True)

    def _wait_for_broker(self) -> bool:
        """Poll until the broker answers (backoff 0.5 s to 15 s); False if stopped first."""
        if not wait_for_broker(self.settings, STAGE, self.stop_event):
            return False
        self._set_broker(True)
        return True

    # --- the loop -----------------------------------------------------------------------
    def drain_labels(self, limit: int = 50_000, timeout: float = 0) -> int:
        msgs = self.labels.consume(num_messages=limit, timeout=timeout)
        learn = self.state.learn_label
        before = self.state.classifier.learned
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
            known_at = msg.timestamp()[1]
            learn(*label, known_at)
            self._label_time[msg.partition() or 0] = known_at
            n += 1
        self.stats.labels += n
        if self.telemetry is not None:
            self.telemetry.labels(n, self.state.classifier.learned - before)
        return n

    def _await_labels(self, upto_ms: int) -> None:
        """``labels_wait``: read the labels topic until every partition of it has reached
        ``upto_ms`` in event time or its end, so the batch sees every label known by then."""
        topic = self.settings.topic_labels
        while not self.stop_event.is_set():
            behind = [p for p in self._label_parts if self._label_time.get(p, -1) < upto_ms]
            if not behind:
                return
            if self.drain_labels(timeout=0.1):
                continue
            ends = [
                self.labels.get_watermark_offsets(TopicPartition(topic, p), 5, False)[1]
                for p in behind
            ]
            done = self.labels.position([TopicPartition(topic, p) for p in behind])
            if all(tp.offset >= end for tp, end in zip(done, ends, strict=True)):
                return

    def _dead_letter(self, msg: Message, exc: MessageError) -> None:
        letter = dead_letter(msg, STAGE, exc.kind, str(exc))
        value, headers = letter.value, letter.headers
        if value is not None and len(value) > DLQ_VALUE_LIMIT:
            headers = [
                *headers,
                (PREFIX + "value.truncated", str(len(value)).encode()),
                (PREFIX + "value.sha256", hashlib.sha256(value).hexdigest().encode()),
            ]
            value = value[:DLQ_VALUE_LIMIT]
        self.producer.produce(
            self.settings.topic_dlq,
            value,
            letter.key,
            headers=headers,
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

    def _emit(self, out: ScreenedBatch, sources: list[Message], sent: list[int]) -> None:
        s, produce = self.settings, self.producer.produce
        for i, flagged in enumerate(out.flagged.tolist()):
            h = sent_ms(sources[i])
            headers: list[tuple[str, str | bytes | None]] | None = [("sent_ms", h)] if h else None
            tx = out.txs[i]
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

    def process(self, msgs: list[Any]) -> None:
        started = time.perf_counter()
        groups: dict[int, tuple[list[Transaction], list[Message]]] = {}
        last: dict[tuple[str, int], int] = {}
        owned = self.state.parts
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err.str())
                continue
            p = msg.partition()
            if p not in owned:  # revoked while the batch was in flight
                continue
            if not last and self.exactly_once:
                self.producer.begin_transaction()
                self._in_transaction = True
            last[(msg.topic(), p)] = msg.offset()
            try:
                tx = decode_transaction(msg.value())
            except MessageError as exc:
                self._dead_letter(msg, exc)
                continue
            group = groups.get(p)
            if group is None:
                group = groups[p] = ([], [])
            group[0].append(tx)
            group[1].append(msg)
        if not last:
            return
        outs: list[ScreenedBatch] = []
        sent: list[int] = []
        if self.settings.labels_wait and groups:
            self._await_labels(max(tx.ts_ms for txs, _ in groups.values() for tx in txs))
        for p, (txs, sources) in groups.items():
            out = self.state.screen(p, txs)
            self._emit(out, sources, sent)
            outs.append(out)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        if not self._commit(offsets):
            return
        self.stats.consumed += len(msgs)
        self.stats.batches += 1
        merged = merge_batches(outs) if outs else None
        if merged is not None:
            n_flagged = int(merged.flagged.sum())
            self.stats.flagged += n_flagged
            self.stats.approved += len(merged.txs) - n_flagged
            if self.on_batch is not None:
                self.on_batch(merged)
        if self.telemetry is not None:
            self.telemetry.batch(len(msgs), merged, sent, time.perf_counter() - started)

    def _commit(self, offsets: list[TopicPartition]) -> bool:
        """Make the batch's outputs durable, then its offsets; False if the batch was rewound."""
        if self.exactly_once:
            return self._commit_transaction(offsets)
        self._flush()
        if self._failed_delivery:
            errors, self._failed_delivery = self._failed_delivery, []
            raise BrokerError(f"outputs not delivered: {errors[:3]}")
        self.consumer.store_offsets(offsets=offsets)
        return True

    def _flush(self) -> None:
        """Wait until every output is acknowledged, through broker outages."""
        waited = 0.0
        give_up: float | None = None
        while True:
            remaining = self.producer.flush(1.0)
            if not remaining:
                return
            waited += 1.0
            if waited % 10 == 0:
                log.warning("%d outputs waiting for the broker (%.0fs)", remaining, waited)
            if self.stop_event.is_set():
                give_up = give_up or time.monotonic() + STOP_GRACE_S
                if time.monotonic() > give_up:
                    raise BrokerError(
                        f"stopping with {remaining} outputs undelivered; their offsets are not "
                        "committed, so they are processed again after a restart"
                    )

    def _commit_transaction(self, offsets: list[TopicPartition]) -> bool:
        group = self.consumer.consumer_group_metadata()
        try:
            self._retry(
                "send offsets",
                lambda: self.producer.send_offsets_to_transaction(offsets, group, 30),
            )
            self._retry("commit transaction", lambda: self.producer.commit_transaction(30))
            self._in_transaction = False
            return True
        except KafkaException as exc:
            err = exc.args[0]
            if not err.txn_requires_abort():
                raise BrokerError(f"transaction failed: {err.str()}") from None
            log.warning("transaction aborted (%s); rewinding its partitions", err.str())
        self._retry("abort transaction", lambda: self.producer.abort_transaction(30))
        self._in_transaction = False
        self._rewind(offsets)
        return False

    def _rewind(self, offsets: list[TopicPartition]) -> None:
        """Undo an aborted batch: rebuild its partitions' state to the committed offsets and
        seek the consumer back there."""
        self.stats.rewinds += 1
        committed = self._committed(offsets)
        self._rebuild(committed)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _maybe_reload_rules(self) -> None:
        if self.reloader.maybe_reload():
            self.state.set_rules(self.reloader.current())
            self._reloaded(True)
            if self.telemetry is not None:
                self.telemetry.rules_changed(self.state.rules)
            log.info("rule set %s swapped in", self.state.rules.version)

    def run(
        self, max_messages: int | None = None, idle_timeout_s: float | None = None
    ) -> Stage1Stats:
        """Run until stopped (``stop_event``), ``max_messages`` consumed, or idle too long."""
        if not self._wait_for_broker():
            self.reloader.close()
            return self.stats
        self._open()
        s = self.settings
        wait = s.stage1_batch_wait_ms / 1000
        last_data = time.monotonic()
        try:
            while not self.stop_event.is_set():
                self._maybe_reload_rules()
                self.drain_labels()
                msgs = self.consumer.consume(num_messages=s.stage1_batch_size, timeout=wait)
                if msgs:
                    self.process(msgs)
                    self._set_broker(True)
                    last_data = time.monotonic()
                    if self.telemetry is not None and self.stats.assigned:
                        self.telemetry.lag(self.consumer, s.topic_transactions, self.stats.assigned)
                else:
                    self._probe()
                    if idle_timeout_s is not None and time.monotonic() - last_data > idle_timeout_s:
                        break
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        """Flush, commit, leave the group."""
        try:
            if self.exactly_once:
                if self._in_transaction:
                    self.producer.abort_transaction(10)
            else:
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
