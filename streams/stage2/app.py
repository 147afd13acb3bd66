"""The stage-2 worker: a faust-streaming app over the flagged topic.

One agent (``concurrency=1``) takes micro-batches (``stage2_batch_size`` within
``stage2_batch_wait_ms``) and scores each in one XGBoost call through the pure ``Scorer``, in a
scoring thread while the event loop takes the next batch (``streams.stage2.agents``,
``streams.stage2.batches``). A table keyed by card keeps per-card stage-2 context (flags,
declines, last action), recovered from its changelog topic after a restart
(``streams.stage2.records``). Decisions and the table's changelog records go out through one
confluent-kafka producer (``streams.stage2.output``); a batch's events are acked only once all
of them are delivered. A record that cannot be decoded goes to the flagged dead-letter topic; a
transient scoring failure goes to the retry topics (``<flagged>.retry.N``) with growing delays,
then to the dead-letter topic (``streams.stage2.failures``). Models are reloaded between
batches (``streams.stage2.versions``); counts in ``streams.stage2.stats``, metrics in
``streams.stage2.telemetry``.
The app is built by ``build_app`` (no global app at import time), which only wires these parts
to faust's topics, table and agents.

Idempotence: a flagged record seen twice (stage 1 is at-least-once) gets the same decision bytes
both times: the card context is an event-time window over the card's flagged transactions, kept
by transaction id (``apply_card_context``), and the decision value holds no wall-clock time
(``sent_ms`` travels as a header).

Exactly-once (``FRAUD_STAGE2_EXACTLY_ONCE``): faust's Kafka transactions, with every output of a
record in its source partition's transaction and commits between batches
(``streams.stage2.exactly_once``).

Test hook: ``FRAUD_FAULT_INJECT=stage2-transient[:N]`` (``streams.stage2.faults``) makes scoring
fail as a transient error on attempts below N, to exercise the retry topics and the dead-letter
path. Only tests set it; it is read once, when the app is built.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import faust

from streams.gc_tuning import tuned_gc
from streams.kafka.faust_commit import stale_records
from streams.kafka.faust_config import data_dir, faust_broker_settings
from streams.kafka.faust_fetch import App
from streams.kafka.faust_transactions import CommitBarrier
from streams.kafka.partition_end import true_ends
from streams.kafka.topics import COMPACTION_TUNING, retry_topic, topic_config
from streams.observability.metrics import STAGE2
from streams.settings import Settings
from streams.stage2.agents import score_flagged, score_retries
from streams.stage2.batches import BatchScorer
from streams.stage2.context import CARD_TABLE
from streams.stage2.exactly_once import TransactionalOutput
from streams.stage2.failures import Failures
from streams.stage2.faults import FAULT_ENV, injected_fault_attempts
from streams.stage2.output import BatchOutput
from streams.stage2.records import OutputRecords
from streams.stage2.stats import Stage2Stats
from streams.stage2.telemetry import Stage2Telemetry
from streams.stage2.versions import ModelVersions

__all__ = ["build_app", "is_ready", "run_worker"]
log = logging.getLogger(__name__)
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def build_app(settings: Settings) -> App:
    s = settings
    app = faust_app(s)
    flagged = app.topic(s.topic_flagged, **RAW)
    retries = [
        app.topic(retry_topic(s.topic_flagged, a), **RAW) for a in range(1, s.stage2_max_attempts)
    ]
    # Co-partitioned with the flagged topic: a card's changelog records go to the partition its
    # flagged records come from (``OutputRecords``), so the worker that is assigned a flagged
    # partition recovers exactly the cards of that partition. (Hashing the table's JSON key,
    # '"<card>"', would put a card elsewhere than its flagged partition, and a worker would
    # restore other workers' cards after a rebalance.)
    # faust creates its changelog compacted; the tuning bounds its recovery read (``topics``)
    cards = app.Table(
        CARD_TABLE,
        default=dict,
        partitions=s.partitions,
        extra_topic_configs=topic_config(s, COMPACTION_TUNING),
    )
    telemetry = Stage2Telemetry()
    models = ModelVersions.load(
        s.model_dir, s.challenger_dir, s.policy_file, telemetry.models_changed
    )
    stats = app.conf.stage2_stats = Stage2Stats()
    exactly_once = s.stage2_exactly_once
    transactional = TransactionalOutput(app) if exactly_once else None
    if exactly_once:
        app.commit_barrier = CommitBarrier()
    fault = injected_fault_attempts()
    if fault is not None:
        log.warning("%s: scoring fails on attempts below %d (test hook)", FAULT_ENV, fault)
    batches = BatchScorer(
        models,
        OutputRecords(
            cards.data,
            cards.changelog_topic.get_topic_name(),
            s.topic_decisions,
            telemetry.sent,
            decisions_in_source_partition=exactly_once,
        ),
        transactional or BatchOutput(s),
        Failures(s, retries, app.topic(s.topic_flagged_dlq, **RAW), stats, transactional),
        stats=stats,
        telemetry=telemetry,
        # one thread for the booster calls: batches are scored one after another, as with
        # PREDICT_THREADS = 1, and the event loop's own thread is left to faust
        scoring_thread=ThreadPoolExecutor(1, thread_name_prefix="stage2-scoring"),
        fault=fault,
        barrier=app.commit_barrier,
        stale=stale_records(app),
    )
    app.on_rebalance_complete.connect(stats.rebalanced)  # type: ignore[arg-type]
    size, within = s.stage2_batch_size, s.stage2_batch_wait_ms / 1000

    @app.agent(flagged, concurrency=1)
    async def score(stream: Any) -> None:
        await score_flagged(stream, batches, size, within)

    for attempt, topic in enumerate(retries, start=1):

        async def retry_agent(stream: Any, attempt: int = attempt) -> None:
            await score_retries(stream, batches, attempt, size, within)

        app.agent(topic, name=f"retry-{attempt}", concurrency=1)(retry_agent)
    return app


def faust_app(s: Settings) -> App:
    """The stage-2 faust app, its agents, topics and table not yet added."""
    exactly_once = s.stage2_exactly_once
    return App(
        s.stage2_app_id,
        fetch_max_wait_ms=s.stage2_fetch_wait_ms,
        # the card table's recovery must read its changelog to the last record, which the
        # embedded broker's listed end can cut short
        partition_ends=partial(true_ends, s, committed_only=exactly_once),
        store="memory://",
        # tables live in memory (recovered from their changelog); keep faust's data directory out
        # of the working directory
        datadir=str(data_dir(s.stage2_app_id)),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        # exactly-once: a rebalance first lets the batches in flight finish and commits them
        stream_wait_empty=exactly_once,
        processing_guarantee="exactly_once" if exactly_once else "at_least_once",
        # faust's stream buffer is its prefetch: at faust's default (4,096) the fetcher pauses
        # while three batches are in flight and the scorer waits for records
        stream_buffer_maxsize=s.stage2_stream_buffer,
        broker_commit_interval=s.stage2_commit_interval_s,
        **faust_broker_settings(s),
    )


def is_ready(app: faust.App) -> bool:
    """Assigned its partitions (the first rebalance completed)."""
    return bool(app.conf.stage2_stats.ready)


def run_worker(app: faust.App, loglevel: str = "WARNING", settings: Settings | None = None) -> None:
    """Run the faust worker in the foreground until SIGTERM/SIGINT (faust then stops its agents,
    commits and leaves the group). With ``settings``, first wait for the broker (backoff, logged,
    ``broker_up`` metric) instead of failing when it is not there yet."""
    if settings is not None:
        from streams.kafka.broker_wait import wait_for_broker

        wait_for_broker(settings, STAGE2)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    with tuned_gc():  # as in stage 1: the collector would rescan the card table and modules
        worker.execute_from_commandline()
