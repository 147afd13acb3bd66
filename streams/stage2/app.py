"""The stage-2 worker: a faust-streaming app over the flagged topic.

One agent (``concurrency=1``) takes micro-batches (``stage2_batch_size`` within
``stage2_batch_wait_ms``) and scores each in one XGBoost call through the pure ``Scorer``, in a
scoring thread while the event loop takes the next batch (``streams.stage2.pipeline``).
A table keyed by card keeps per-card stage-2 context (flags, declines, last action), recovered
from its changelog topic after a restart. Decisions and the table's changelog records go out
through one confluent-kafka producer (``streams.stage2.output``); a batch's events are acked
only once all of them are delivered. A record that cannot be decoded goes to the flagged
dead-letter topic; a transient scoring failure goes to the retry topics
(``<flagged>.retry.N``) with growing delays, then to the dead-letter topic
(``streams.stage2.failures``).
The app is built by ``build_app`` (no global app at import time).

Idempotence: a flagged record seen twice (stage 1 is at-least-once) gets the same decision bytes
both times: the card context is an event-time window over the card's flagged transactions, kept
by transaction id (``apply_card_context``), and the decision value holds no wall-clock time
(``sent_ms`` travels as a header).

Test hook: ``FRAUD_FAULT_INJECT=stage2-transient[:N]`` makes scoring fail as a transient error on
attempts below N (every attempt without N), to exercise the retry topics and the dead-letter
path. Only tests set it; it is read once, when the app is built.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import orjson

from streams.errors import ModelError
from streams.gc_tuning import tuned_gc
from streams.kafka.faust_config import data_dir, faust_broker_settings
from streams.kafka.faust_fetch import App
from streams.kafka.topics import COMPACTION_TUNING, retry_topic
from streams.observability import metrics
from streams.settings import Settings
from streams.stage2.context import apply_card_context as apply_card_context  # re-exported
from streams.stage2.context import apply_card_contexts
from streams.stage2.failures import STAGE, Failures
from streams.stage2.output import ANY_PARTITION, BatchOutput, Delivery, Headers, Record
from streams.stage2.pipeline import IN_FLIGHT, Job, header, sent_ms, source_partition
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import ModelHolder, Scorer

log = logging.getLogger(__name__)
FAULT_ENV = "FRAUD_FAULT_INJECT"


def injected_fault_attempts(value: str | None = None) -> int | None:
    """Attempts that fail under ``FRAUD_FAULT_INJECT=stage2-transient[:N]``; None = no fault.

    >>> injected_fault_attempts("stage2-transient:1"), injected_fault_attempts("")
    (1, None)
    """
    text = os.environ.get(FAULT_ENV, "") if value is None else value
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        if name == "stage2-transient":
            return int(count) if count else 1_000_000
    return None


def build_app(settings: Settings) -> faust.App:
    s = settings
    app = App(
        s.stage2_app_id,
        fetch_max_wait_ms=s.stage2_fetch_wait_ms,
        store="memory://",
        # tables live in memory (recovered from their changelog); keep faust's data directory out
        # of the working directory
        datadir=str(data_dir(s.stage2_app_id)),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        # faust's stream buffer is its prefetch: at its default (4,096) the fetcher paused while
        # three batches were in flight, and stage 2 idled a third of the time (3.5k -> 6k/s)
        stream_buffer_maxsize=s.stage2_stream_buffer,
        **faust_broker_settings(s),
    )
    holder = ModelHolder(s.model_dir)
    challenger = ModelHolder(s.challenger_dir) if s.challenger_dir else None
    scorer = Scorer(
        holder.model, DecisionPolicy.load(s.policy_file), challenger.model if challenger else None
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    flagged = app.topic(s.topic_flagged, **raw)
    retries = [
        app.topic(retry_topic(s.topic_flagged, a), **raw) for a in range(1, s.stage2_max_attempts)
    ]
    output = BatchOutput(s)
    dlq = app.topic(s.topic_flagged_dlq, **raw)
    # Co-partitioned with the flagged topic: a card's changelog records go to the partition its
    # flagged records come from (``publish``), so the worker that is assigned a flagged
    # partition recovers exactly the cards of that partition. (Hashing the table's JSON key,
    # '"<card>"', would put a card elsewhere than its flagged partition, and a worker would
    # restore other workers' cards after a rebalance.)
    # faust creates its changelog compacted; the tuning bounds its recovery read (``topics``)
    cards = app.Table(
        "stage2-card-context",
        default=dict,
        partitions=s.partitions,
        extra_topic_configs=COMPACTION_TUNING,
    )
    changelog = cards.changelog_topic.get_topic_name()
    # one thread for the booster calls: batches are scored one after another, as with
    # PREDICT_THREADS = 1, and the event loop's own thread is left to faust
    scoring_thread = ThreadPoolExecutor(1, thread_name_prefix="stage2-scoring")
    stats: dict[str, Any] = {"scored": 0, "dead_letters": 0, "retried": 0, "ready": False}
    fault = injected_fault_attempts()
    if fault is not None:
        log.warning("%s: scoring fails on attempts below %d (test hook)", FAULT_ENV, fault)

    app.conf.stage2_stats = stats
    failures = Failures(s, retries, dlq, stats)
    dead_letter, retry_or_dead = failures.dead_letter, failures.retry_or_dead

    async def _ready(sender: Any, **kwargs: Any) -> None:
        if not stats["ready"]:
            log.info("stage 2 ready: partitions assigned")
        stats["ready"] = True

    app.on_rebalance_complete.connect(_ready)  # type: ignore[arg-type]

    metrics.init_stage(STAGE)
    versions: list[str | None] = [None, None]
    drift = metrics.DriftTracker(STAGE)
    sent_times: list[int] = []

    async def begin(events: list[Any], attempt: int) -> Job:
        """Decode a batch, build its features and start its booster call in the scoring thread.
        Its events stay unacked (one extra reference each) until ``finish`` has delivered
        everything they produced."""
        for event in events:
            event.message.incref()
        job = Job(events, attempt, time.perf_counter(), asyncio.get_running_loop().create_future())
        job.published.add_done_callback(_retrieved)  # its error is raised by finish itself
        if holder.maybe_reload():
            scorer.swap(champion=holder.model)
        if challenger is not None and challenger.maybe_reload():
            scorer.swap(challenger=challenger.model)
        if holder.model.version != versions[0] or (
            challenger is not None and challenger.model.version != versions[1]
        ):
            versions[:] = [holder.model.version, challenger.model.version if challenger else None]
            metrics.set_model_version(versions[0] or "", versions[1])
            drift.reset()
        loads = orjson.loads
        for event in events:
            try:
                record = loads(event.message.value)
                if not isinstance(record, dict) or "features" not in record:
                    raise ValueError("not a flagged record")
                sent = sent_ms(event)
                if sent is not None:
                    record["sent_ms"] = sent
                job.records.append(record)
                job.good.append(event)
            except (orjson.JSONDecodeError, ValueError) as exc:
                await dead_letter(event, "decode", str(exc))
        try:
            if fault is not None and attempt < fault:
                raise RuntimeError(f"injected transient fault ({FAULT_ENV}), attempt {attempt}")
            job.batch = scorer.prepare(job.records)
        except ModelError:
            job.decided = await isolate(job)
            return job
        except Exception as exc:
            await retry_all(job, exc)
            return job
        # exact TreeSHAP is most of a batch's CPU time; XGBoost releases the GIL, so the event
        # loop takes and prepares the next batch meanwhile
        loop = asyncio.get_running_loop()
        job.predicted = loop.run_in_executor(scoring_thread, scorer.predict, job.batch)
        return job

    async def finish(job: Job, previous: Job | None = None) -> None:
        """Decisions of a begun batch: card context and decisions handed to the producer (after
        ``previous`` batch's, so the table and the topics see batches in order), then, once
        the broker has them all, the batch's events acked (so faust commits their offsets only
        after their outputs are delivered)."""
        try:
            if previous is not None:
                await asyncio.shield(previous.published)
            if job.predicted is not None and job.batch is not None:
                try:
                    job.decided = scorer.decisions(job.batch, await job.predicted)
                except ModelError:
                    job.decided = await isolate(job)
                except Exception as exc:
                    await retry_all(job, exc)
            delivery = await publish(job.records, job.good, job.decided) if job.decided else None
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                job.published.cancel()
            else:
                job.published.set_exception(exc)
            raise
        job.published.set_result(None)
        if delivery is not None:
            await output.delivered(delivery)
        if job.decided is not None:
            stats["scored"] += len(job.decided)
            _report(len(job.events), job.decided, job.started)
        for event in job.events:
            event.ack()

    async def isolate(job: Job) -> list[dict[str, Any]]:
        """Score record by record, so only the bad record goes to the dead-letter topic."""
        decided: list[dict[str, Any]] = []
        for record, event in zip(job.records, job.good, strict=True):
            try:
                decided += scorer.score_batch([record])
            except ModelError as exc:
                await dead_letter(event, "validation", str(exc))
            except Exception as exc:
                await retry_or_dead(event, job.attempt + 1, repr(exc))
        return decided

    async def retry_all(job: Job, exc: Exception) -> None:
        log.warning("scoring failed (%s); sending %d records to retry", exc, len(job.good))
        for event in job.good:
            await retry_or_dead(event, job.attempt + 1, repr(exc))

    async def publish(
        records: list[dict[str, Any]], events: list[Any], decided: list[dict[str, Any]]
    ) -> Delivery:
        """Card context (one table write per card per batch) and the decisions, handed to the
        producer; ``finish`` waits for their delivery before it acks the batch."""
        source = {
            str(r.get("transaction_id")): (int(r.get("ts_ms") or 0), source_partition(e))
            for r, e in zip(records, events, strict=True)
        }
        by_card: dict[str, list[tuple[dict[str, Any], int]]] = {}
        card_partition: dict[str, int] = {}
        for decision in decided:
            ts_ms, partition = source.get(str(decision.get("transaction_id")), (0, ANY_PARTITION))
            card = str(decision.get("card_id"))
            by_card.setdefault(card, []).append((decision, ts_ms))
            card_partition[card] = partition
        # The card table is written the way faust writes it (same changelog topic, JSON key and
        # value bytes; recovery reads them back as before), to the card's flagged-topic
        # partition, through the batch's producer: faust's per-record changelog path cost more
        # event-loop time than the scoring, and these records are delivered before the batch is
        # acked all the same.
        out: list[Record] = []
        data = cards.data
        dumps = orjson.dumps
        for card, items in by_card.items():
            ctx = apply_card_contexts(data.get(card) or {}, items)
            data[card] = ctx
            out.append((changelog, dumps(card), dumps(ctx), [], card_partition[card]))
        topic = s.topic_decisions
        for decision in decided:
            sent = decision.pop("sent_ms", None)
            headers: Headers = [("sent_ms", str(sent).encode())] if sent is not None else []
            if sent is not None:
                sent_times.append(int(sent))
            key = str(decision["transaction_id"]).encode()
            out.append((topic, key, dumps(decision), headers, ANY_PARTITION))
        return await output.produce(out)

    def _report(consumed: int, decided: list[dict[str, Any]], started: float) -> None:
        """Stage-2 metrics of one batch: counts, actions, scores, latency, drift."""
        metrics.record_consumed(STAGE, consumed)
        metrics.observe_batch(STAGE, consumed, time.perf_counter() - started)
        if not decided:
            return
        actions: dict[str, int] = {}
        for d in decided:
            actions[d["action"]] = actions.get(d["action"], 0) + 1
        metrics.record_decisions(STAGE, actions)
        scores = [float(d["score"]) for d in decided]
        metrics.observe_scores(STAGE, versions[0] or "", scores)
        drift.observe_scores(scores)
        drift.observe_actions(actions)
        sent = [float(v) for v in sent_times]
        sent_times.clear()
        if sent:
            metrics.observe_end_to_end_since(STAGE, sent)

    @app.agent(flagged, concurrency=1)
    async def score(stream: Any) -> None:
        # Batches in flight (at most IN_FLIGHT): while batch N is scored in the scoring thread
        # and batch N-1's outputs are delivered, faust takes and decodes batch N+1.
        inflight: deque[tuple[Job, asyncio.Future[None]]] = deque()
        try:
            async for events in stream.take_events(
                s.stage2_batch_size, within=s.stage2_batch_wait_ms / 1000
            ):
                job = await begin(events, attempt=0)
                previous = inflight[-1][0] if inflight else None
                inflight.append((job, asyncio.ensure_future(finish(job, previous))))
                while len(inflight) >= IN_FLIGHT or (inflight and inflight[0][1].done()):
                    await inflight.popleft()[1]  # raises what stopped a batch
        finally:
            for _, pending in inflight:
                pending.cancel()

    for attempt, topic in enumerate(retries, start=1):

        async def retry_agent(stream: Any, attempt: int = attempt) -> None:
            # micro-batches, like the main flow: wait until the latest record of the batch is
            # due (records arrive in the order they failed, so that is at most a batch late)
            async for events in stream.take_events(
                s.stage2_batch_size, within=s.stage2_batch_wait_ms / 1000
            ):
                due = max(int(header(e, "retry.at.ms") or "0") for e in events)
                delay = due / 1000 - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await finish(await begin(events, attempt=attempt))

        app.agent(topic, name=f"retry-{attempt}", concurrency=1)(retry_agent)
    return app


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def is_ready(app: faust.App) -> bool:
    """Assigned its partitions (the first rebalance completed)."""
    return bool(app.conf.stage2_stats["ready"])


def run_worker(app: faust.App, loglevel: str = "WARNING", settings: Settings | None = None) -> None:
    """Run the faust worker in the foreground until SIGTERM/SIGINT (faust then stops its agents,
    commits and leaves the group). With ``settings``, first wait for the broker (backoff, logged,
    ``broker_up`` metric) instead of failing when it is not there yet."""
    if settings is not None:
        from streams.kafka.broker_wait import wait_for_broker

        wait_for_broker(settings, STAGE)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    with tuned_gc():  # as in stage 1: the collector would rescan the card table and modules
        worker.execute_from_commandline()
