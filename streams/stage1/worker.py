"""The stage-1 Kafka worker: a thin confluent-kafka loop around per-partition ``Screener``s.

One turn of the loop: reload rules if their files changed, learn the labels that arrived, poll
the transactions topic, decode the poll by partition (``batch``; bad messages to the dead
letters), screen each partition's transactions (``streams.stage1.state``), produce one output
per transaction (``outputs``), and count the batch done once its outputs are acknowledged
(``delivery``). The other modules of this package hold one part each: the clients
(``connect``), broker health (``broker_watch``), partition ownership and rebuilds
(``assignment``), the labels feed (``labels``), dead letters (``dead_letters``), metrics
(``telemetry``), collector settings (``streams.gc_tuning``).

Delivery
    *At-least-once* (default): offsets are stored only after every output of the batch (flagged
    records, decisions, dead letters) has been acknowledged by the broker; librdkafka commits the
    stored offsets every second, on revoke and on close. One batch's outputs are in flight while
    the next is screened. Outputs are keyed (decisions by transaction id, flagged records by
    card) and carry no wall-clock value, so a record processed again after a crash yields the
    same output bytes (see *Determinism*).
    *Exactly-once* (``--exactly-once``): one Kafka transaction per batch holds its outputs and its
    consumed offsets (``send_offsets_to_transaction``); readers use ``read_committed``. The
    transactional id is stable per host (``<group>-<hostname>``, or ``FRAUD_TRANSACTIONAL_ID``), so
    a restarted worker fences its predecessor and aborts its open transaction at once. When a
    transaction must be aborted, the batch's partitions are rewound: state rebuilt to the
    committed offset, consumer seeked back.

State
    Per partition (card windows, anomaly model, flag budget, online classifier;
    ``streams.stage1.state``). Every ``stage1_checkpoint_interval_s`` it is checkpointed in the
    compacted ``topic_checkpoints`` with the worker's labels state and the offsets it reflects
    (``checkpointing``). On assignment the worker restores the latest checkpoint and replays
    only the records after it, the labels from the saved offsets (or, without a checkpoint,
    reads the partition from its beginning with the labels topic beside it), through a private
    state that then joins the live one (``streams.stage1.rebuild``). Shared by the partitions of
    a worker: the terminal label table, fed from the labels topic, which every worker reads.

Determinism
    A partition's state is a function of its records in offset order and of the labels in
    event time (``streams.stage1.labelgate``), not of poll timing, batching or which other
    partitions the worker owns. ``labels_wait`` (default on) reads the labels topic before each
    batch until every labels partition shows a label published after the batch's time or is
    idle at its end, so labels published before the transactions that pass their time are never
    late: a crash, a rebuild and a replay give the same decision bytes.

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

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from streams.checkpoint.topic import ensure_topic
from streams.errors import TransactionAbortable
from streams.gc_tuning import tuned_gc
from streams.kafka.clients import consume_ready
from streams.observability import metrics
from streams.rules.reload import RuleReloader
from streams.settings import Settings
from streams.stage1 import connect
from streams.stage1.assignment import Assignment
from streams.stage1.batch import split
from streams.stage1.broker_watch import BrokerWatch
from streams.stage1.checkpointing import Checkpointer, Snapshot
from streams.stage1.dead_letters import DeadLetters
from streams.stage1.delivery import AtLeastOnce, DeliveryGuarantee, DoneBatch, ExactlyOnce
from streams.stage1.labels import LabelFeed
from streams.stage1.outputs import aborts_transaction, emit
from streams.stage1.recent import RecentTraffic
from streams.stage1.screen import merge_batches
from streams.stage1.state import PartitionedScreener
from streams.stage1.stats import Stage1Stats
from streams.stage1.telemetry import Stage1Telemetry

log = logging.getLogger(__name__)


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
        self.recent = RecentTraffic()
        self.telemetry = Stage1Telemetry(self.state.rules)
        self.stats = Stage1Stats()
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self.exactly_once = settings.exactly_once
        self.watch = BrokerWatch(settings, self.stats, self.stop_event)
        self.checkpointer = Checkpointer(settings)
        self.assignment = Assignment(
            settings, self.state, self.stats, self.watch, self.stop_event, self.checkpointer
        )

    # --- Kafka plumbing -----------------------------------------------------------------
    def _open(self) -> None:
        s, watch = self.settings, self.watch
        self.producer = connect.producer(
            s, watch.error_cb, lambda err, msg: self.delivery.on_failure(err, msg)
        )
        if self.exactly_once:
            log.info("exactly-once: initialising transactions as %s", connect.transactional_id(s))
            watch.retry("init transactions", lambda: self.producer.init_transactions(30))
            log.info("exactly-once: transactions ready")
        self.consumer = connect.consumer(s, watch.error_cb)
        self.delivery: DeliveryGuarantee = (
            ExactlyOnce(self.producer, self.consumer, watch, self._finish, self.assignment.rewind)
            if self.exactly_once
            else AtLeastOnce(
                self.producer, self.consumer, self.stop_event, self._finish, self._owned
            )
        )
        if self.checkpointer.enabled and not ensure_topic(s):
            self.checkpointer.interval = 0
        self.feed = LabelFeed(s, connect.labels_consumer(s), self.state, self.stats, self.telemetry)
        self.assignment.take_labels = self.feed.resume
        self.assignment.subscribe(self.consumer, before_revoke=self.delivery.hand_over)
        self.dead_letters = DeadLetters(s, self.producer, self.stats, self.telemetry)

    def _owned(self) -> dict[int, Any]:
        return self.state.parts

    def _reloaded(self, ok: bool) -> None:
        if self.telemetry is not None:
            self.telemetry.reload(ok)

    def _maybe_reload_rules(self) -> None:
        if self.reloader.maybe_reload():
            self.state.set_rules(self.reloader.current())
            self._reloaded(True)
            if self.telemetry is not None:
                self.telemetry.rules_changed(self.state.rules)
            log.info("rule set %s swapped in", self.state.rules.version)
            self._judge_rules_share()

    def _judge_rules_share(self) -> None:
        """How much of the recent traffic the rule set forwards by itself (log, metric)."""
        share = self.recent.rule_share(self.state.rules)
        if share is None:
            return
        if self.telemetry is not None:
            self.telemetry.rules_share(share)
        maximum = self.settings.stage1_max_forward_share
        if share > maximum:
            log.warning(
                "rule set %s alone forwards %.2f%% of the last %d transactions, more than the "
                "maximum forward share %.2f%%: stage 1 forwards beyond its budget and its model "
                "forwards nothing",
                self.state.rules.version,
                100 * share,
                self.recent.filled,
                100 * maximum,
            )

    # --- the loop -----------------------------------------------------------------------
    def drain_labels(self, limit: int = 50_000, timeout: float = 0) -> int:
        return self.feed.drain(limit, timeout)

    def process(self, msgs: list[Any]) -> None:
        started = time.perf_counter()
        polled = split(
            msgs,
            self.state.parts,
            self.dead_letters.send,
            self.delivery.begin if self.exactly_once else None,
            self.state.rules.schema.checked(),
        )
        if not polled.last:
            return
        if self.settings.labels_wait and polled.groups:
            self.feed.await_time(polled.latest_ts_ms(), self.stop_event.is_set)
        groups = polled.groups
        # the whole poll in one call (rules evaluated once); rows in partition order
        out = self.state.screen_many((p, txs) for p, (txs, _) in groups.items()) if groups else None
        self.delivery.settle()  # the previous batch, before this one produces anything
        sent: list[int] = []
        offsets = polled.offsets()
        if out is not None:
            sources = [m for _, msgs in groups.values() for m in msgs]
            try:
                emit(self.settings, self.producer.produce, out, sources, sent)
            except TransactionAbortable as exc:
                if not isinstance(self.delivery, ExactlyOnce):
                    raise
                self.delivery.abort(offsets, str(exc))
                return
        self.checkpointer.advanced(offsets)
        snapshot = None
        if self.checkpointer.due():
            snapshot = self.checkpointer.snapshot(self.state, self.feed.position())
            if snapshot is not None and self.exactly_once:  # in the batch's transaction
                try:
                    self.checkpointer.write(snapshot, self._produce_checkpoint, self.state.parts)
                except KafkaException as exc:
                    # the transaction failed meanwhile (a sequence gap after a rebalance): the
                    # batch is screened again, as when an output is refused (seen in a kill
                    # test on Apache Kafka, 2026-12-06: the worker exited here)
                    if not isinstance(self.delivery, ExactlyOnce) or not aborts_transaction(exc):
                        raise
                    self.delivery.abort(offsets, f"checkpoint not written: {exc.args[0].str()}")
                    return
                snapshot = None
        done = DoneBatch(
            offsets,
            len(msgs),
            [out] if out is not None else [],
            sent,
            time.perf_counter() - started,
            snapshot,
        )
        self.delivery.done(done)

    def _produce_checkpoint(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        """A checkpoint record; its failed delivery is logged, not fatal (an older checkpoint
        and a longer replay then serve a restart)."""
        self.producer.produce(
            topic, value, key, partition=partition, on_delivery=self._checkpoint_delivered
        )

    def _checkpoint_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            metrics.record_checkpoint(msg.partition(), None)
            log.warning("checkpoint record for partition %s not written: %s", msg.partition(), err)

    def _checkpoint_when_idle(self) -> None:
        """A due checkpoint while no records come (what was screened last is settled)."""
        if not self.checkpointer.due():
            return
        snapshot = self.checkpointer.snapshot(self.state, self.feed.position())
        if snapshot is None:
            return
        if not self.exactly_once:
            self._write_checkpoint(snapshot)
            return
        try:  # its offsets are committed: the checkpoint alone in a transaction
            self.producer.begin_transaction()
            self.checkpointer.write(snapshot, self._produce_checkpoint, self.state.parts)
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            log.warning("checkpoint not written (%s)", exc)
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(30)

    def _write_checkpoint(self, snapshot: Snapshot) -> None:
        """At-least-once: commit the snapshot's offsets, then write it (never ahead of them)."""
        at = snapshot.offsets
        owned = [p for p in at if p in self.state.parts]
        topic = self.settings.topic_transactions
        offsets = [TopicPartition(topic, p, at[p]) for p in owned]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            for p in owned:
                metrics.record_checkpoint(p, None)
            log.warning("checkpoint skipped: its offsets did not commit (%s)", exc)
            return
        self.checkpointer.write(snapshot, self._produce_checkpoint, owned)

    def _finish(self, batch: DoneBatch) -> None:
        """A batch whose outputs are acknowledged and offsets stored (or committed)."""
        self.stats.consumed += batch.consumed
        self.stats.batches += 1
        if batch.checkpoint is not None:
            self._write_checkpoint(batch.checkpoint)
        merged = merge_batches(batch.outs) if batch.outs else None
        if merged is not None:
            n_flagged = int(merged.flagged.sum())
            self.stats.flagged += n_flagged
            self.stats.approved += len(merged.txs) - n_flagged
            self.recent.add(merged)
            if self.on_batch is not None:
                self.on_batch(merged)
        if self.telemetry is not None:
            self.telemetry.batch(batch.consumed, merged, batch.sent, batch.seconds)
            self.telemetry.recall(self.state.parts)

    def run(
        self, max_messages: int | None = None, idle_timeout_s: float | None = None
    ) -> Stage1Stats:
        """Run until stopped (``stop_event``), ``max_messages`` consumed, or idle too long."""
        if not self.watch.wait():
            self.reloader.close()
            return self.stats
        self._open()
        s = self.settings
        wait = s.stage1_batch_wait_ms / 1000
        poll = s.stage1_poll_size
        last_data = time.monotonic()
        try:
            with tuned_gc():
                while not self.stop_event.is_set():
                    self._maybe_reload_rules()
                    if self.feed.wanted():
                        self.feed.drain()
                    msgs = consume_ready(self.consumer, poll, wait)
                    # records prefetched before an outage do not prove the broker is back: only
                    # a metadata round trip does (asked every 2 s while it is marked down)
                    self.watch.probe(self.consumer)
                    if msgs:
                        self.process(msgs)
                        last_data = time.monotonic()
                        if self.telemetry is not None and self.stats.assigned:
                            self.telemetry.lag(
                                self.consumer, s.topic_transactions, self.stats.assigned
                            )
                    else:
                        self.delivery.settle()  # idle: what is in flight is done
                        self._checkpoint_when_idle()
                        if (
                            idle_timeout_s is not None
                            and time.monotonic() - last_data > idle_timeout_s
                        ):
                            break
                    if max_messages is not None and self.stats.consumed >= max_messages:
                        break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        """Flush, commit, leave the group."""
        self.delivery.close()
        self.consumer.close()
        self.feed.close()
        self.reloader.close()
        self.checkpointer.close()
