"""``evaluate --through-kafka``: the evaluated history through the broker and both real workers.

After the in-process run (``run.evaluate``) has trained each fold's model and scored its test
week, the same history goes through Kafka, and the scores the workers publish must equal the
in-process ones:

1. topics of this run only, one partition each (the worker then reads the stream in the order the
   in-process runner does; partitioning by card is the worker's normal mode and is tested by the
   recovery suite);
2. ``produce`` publishes every transaction and each label once its delay has passed in event time
   (the rest at the end), exactly as ``fraudstream produce`` does;
3. one stage-1 worker process (``python -m streams stage1``) screens the whole history with
   ``FRAUD_LABELS_WAIT=true``: before a segment it waits until the labels topic has been read up
   to the segment's event time, so label timing is the stream's, not the scheduler's;
4. per fold, the flagged records of its test week are copied into a fold topic, and one stage-2
   worker process (``python -m streams stage2``, the faust app) with that fold's model decides them;
5. every test transaction's published result is compared with the in-process one: the same
   forward verdict, the same stage-1 score (unflagged) or stage-2 score (flagged) to the six
   decimals the workers publish, and the same fold metrics recomputed from the published scores.

Any difference is reported (count, largest, the first few transaction ids) and makes the command
fail; nothing is tuned to hide one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from streams.bench.stage2 import spawn_worker
from streams.data.produce import produce_history
from streams.errors import FraudstreamError
from streams.evaluation.handbook_metrics import two_stage_scores
from streams.evaluation.protocol import Fold
from streams.kafka import clients
from streams.kafka.topics import create_topics, scoped, topic_names
from streams.settings import Settings

log = logging.getLogger(__name__)

PUBLISHED_DECIMALS = 6
TOLERANCE = 0.5 * 10**-PUBLISHED_DECIMALS + 1e-12  # rounding to 6 decimals, and nothing else
IDLE_TIMEOUT_S = 180.0  # no output for this long while a worker runs: it is stuck


class ThroughKafkaError(FraudstreamError):
    """The broker run did not complete, or its scores differ from the in-process ones."""


Say = Callable[[str], None]


@dataclass
class Published:
    """What the workers published for the test transactions."""

    stage1_score: dict[str, float] = field(default_factory=dict)
    flagged: dict[str, tuple[bytes | None, bytes, int]] = field(default_factory=dict)
    stage2_score: dict[str, float] = field(default_factory=dict)
    stage1_outputs: int = 0
    dead_letters: int = 0


def run_settings(settings: Settings, tag: str, rules_dir: Path | None) -> Settings:
    """Topics, group and app id of this run only; one partition; labels awaited."""
    return scoped(settings, f"evaluate-{tag}").model_copy(
        update={
            "partitions": 1,
            "labels_wait": True,
            "rules_reload": False,
            "rules_dir": Path(rules_dir or settings.rules_dir).resolve(),
            "policy_file": Path(settings.policy_file).resolve(),
            "challenger_dir": None,
        }
    )


def fold_settings(settings: Settings, fold: int, model_dir: Path) -> Settings:
    prefix = f"{settings.topic_transactions.removesuffix('.transactions')}.fold-{fold}"
    fold_scope = scoped(settings, prefix)
    return settings.model_copy(
        update={
            "topic_flagged": fold_scope.topic_flagged,
            "topic_decisions": fold_scope.topic_decisions,
            "topic_flagged_dlq": fold_scope.topic_flagged_dlq,
            "stage2_app_id": fold_scope.stage2_app_id,
            "model_dir": model_dir.resolve(),
        }
    )


def follow(
    settings: Settings,
    topics: list[str],
    done: Callable[[], bool],
    alive: Callable[[], bool],
    what: str,
) -> Iterator[Message]:
    """Every message of ``topics`` (one partition each) from the beginning until ``done()``;
    raises when the worker dies or nothing arrives for ``IDLE_TIMEOUT_S``."""
    consumer = clients.reader(settings, f"evaluate-reader-{uuid.uuid4().hex[:8]}")
    consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
    last = time.monotonic()
    try:
        while not done():
            msgs = consumer.consume(num_messages=5000, timeout=0.5)
            for msg in msgs:
                err = msg.error()
                if err is None:
                    last = time.monotonic()
                    yield msg
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise ThroughKafkaError(f"reading {what}: {err.str()}")
            if not msgs or all(m.error() is not None for m in msgs):
                if not alive():
                    raise ThroughKafkaError(f"the {what} worker exited before it had finished")
                if time.monotonic() - last > IDLE_TIMEOUT_S:
                    raise ThroughKafkaError(
                        f"no {what} output for {IDLE_TIMEOUT_S:.0f} s; the worker is stuck"
                    )
    finally:
        consumer.close()


def stage1(s: Settings, total: int, wanted: set[str], log_dir: Path, out: Published) -> None:
    """Run the stage-1 worker over the produced history; keep the test transactions' results."""
    proc = spawn_worker("stage1", s, log_dir, "evaluate-stage1")
    topics = [s.topic_decisions, s.topic_flagged, s.topic_dlq]
    try:
        messages = follow(
            s,
            topics,
            lambda: out.stage1_outputs + out.dead_letters >= total,
            lambda: proc.alive,
            "stage-1",
        )
        for msg in messages:
            topic = msg.topic()
            if topic == s.topic_dlq:
                out.dead_letters += 1
                continue
            out.stage1_outputs += 1
            value = msg.value() or b""
            record = orjson.loads(value)
            tid = str(record.get("transaction_id"))
            if tid not in wanted:
                continue
            if topic == s.topic_flagged:
                ts = msg.timestamp()[1]
                out.flagged[tid] = (msg.key(), value, ts)
            else:
                out.stage1_score[tid] = float(record["score"])
    finally:
        proc.stop(20)
    if out.dead_letters:
        raise ThroughKafkaError(
            f"stage 1 dead-lettered {out.dead_letters} transactions of a history the in-process "
            f"run read; see topic {s.topic_dlq}"
        )


def stage2(s: Settings, fold: Fold, tids: list[str], log_dir: Path, out: Published) -> None:
    """Copy the fold's flagged records into its own topic and decide them with its model."""
    if not tids:
        return
    create_topics(s, topic_names(s))
    producer = clients.CheckedProducer(s)
    for tid in tids:
        key, value, ts = out.flagged[tid]
        producer.send(s.topic_flagged, value, key, timestamp=ts)
    producer.close(f"of fold {fold.index}'s {len(tids)} flagged records")
    wanted, got = set(tids), 0
    proc = spawn_worker("stage2", s, log_dir, f"evaluate-stage2-fold-{fold.index}")
    try:
        messages = follow(
            s,
            [s.topic_decisions, s.topic_flagged_dlq],
            lambda: got >= len(wanted),
            lambda: proc.alive,
            f"fold {fold.index} stage-2",
        )
        for msg in messages:
            if msg.topic() == s.topic_flagged_dlq:
                raise ThroughKafkaError(
                    f"stage 2 dead-lettered a fold-{fold.index} record: {dict(msg.headers() or [])}"
                )
            decision = orjson.loads(msg.value() or b"")
            tid = str(decision.get("transaction_id"))
            if tid in wanted and tid not in out.stage2_score:
                out.stage2_score[tid] = float(decision["score"])
                got += 1
    finally:
        proc.stop(20)


def compare(scored: pl.DataFrame, out: Published) -> pl.DataFrame:
    """Per test transaction: the in-process and the published verdict and final score."""
    tids = scored["TRANSACTION_ID"].cast(pl.Utf8).to_list()
    flagged = np.array([t in out.flagged for t in tids])
    missing = [t for t in tids if t not in out.flagged and t not in out.stage1_score]
    if missing:
        raise ThroughKafkaError(f"{len(missing)} test transactions have no stage-1 output")
    s1 = np.array([out.stage1_score.get(t, np.nan) for t in tids])
    s2 = np.array([out.stage2_score.get(t, np.nan) for t in tids])
    undecided = int((flagged & np.isnan(s2)).sum())
    if undecided:
        raise ThroughKafkaError(f"{undecided} flagged test transactions have no stage-2 decision")
    return scored.with_columns(
        pl.Series("kafka_flagged", flagged),
        pl.Series("kafka_score", two_stage_scores(np.nan_to_num(s1), flagged, s2)),
    )


def summarise(compared: pl.DataFrame) -> dict[str, Any]:
    flag_diff = compared.filter(pl.col("FLAGGED") != pl.col("kafka_flagged"))
    diff = (compared["score"] - compared["kafka_score"]).abs()
    bad = compared.filter(diff > TOLERANCE)
    return {
        "rows_compared": compared.height,
        "forwarded": int(compared["kafka_flagged"].sum()),
        "forward_mismatches": flag_diff.height,
        "score_mismatches": bad.height,
        # strings: the metrics file rounds its numbers to 6 decimals, which would show 0 here
        "max_abs_score_difference": f"{float(diff.max() or 0.0):.2e}",  # type: ignore[arg-type]
        "tolerance": f"{TOLERANCE:.2e}",
        "first_mismatches": [str(t) for t in bad["TRANSACTION_ID"].head(10).to_list()],
        "identical": flag_diff.height == 0 and bad.height == 0,
    }


def through_kafka(
    df: pl.DataFrame,
    scored: pl.DataFrame,
    fold_list: list[Fold],
    out_dir: Path,
    settings: Settings,
    rules_dir: Path | None,
    say: Say = lambda _: None,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Run the history through the broker and both workers; compare with ``scored`` (the
    in-process test rows: TRANSACTION_ID, fold, FLAGGED, score). Returns the summary and
    ``scored`` with ``kafka_flagged`` and ``kafka_score`` columns."""
    tag = uuid.uuid4().hex[:8]
    log_dir = out_dir / "logs"
    wanted = set(scored["TRANSACTION_ID"].cast(pl.Utf8).to_list())
    published = Published()
    timings: dict[str, float] = {}
    with clients.broker_for(settings) as live:
        s = run_settings(live, tag, rules_dir)
        create_topics(s, topic_names(s))
        start = time.monotonic()
        say(f"producing {df.height:,} transactions and their labels to {s.topic_transactions}")
        produced = produce_history(df, s, flush_labels=True)
        timings["produce_s"] = time.monotonic() - start
        start = time.monotonic()
        say("stage-1 worker screening the history")
        stage1(s, produced.transactions, wanted, log_dir, published)
        timings["stage1_s"] = time.monotonic() - start
        for fold in fold_list:
            ids = scored.filter(pl.col("fold") == fold.index)["TRANSACTION_ID"].cast(pl.Utf8)
            tids = [t for t in ids.to_list() if t in published.flagged]
            start = time.monotonic()
            say(f"fold {fold.index}: stage-2 worker deciding {len(tids):,} flagged transactions")
            model_dir = out_dir / "models" / f"fold-{fold.index}"
            stage2(fold_settings(s, fold.index, model_dir), fold, tids, log_dir, published)
            timings[f"stage2_fold_{fold.index}_s"] = time.monotonic() - start
    compared = compare(scored, published)
    summary = summarise(compared)
    summary.update(
        {
            "broker": "external" if settings.bootstrap_servers else "embedded (Tansu)",
            "transactions": produced.transactions,
            "labels": produced.labels,
            "topics_prefix": f"evaluate-{tag}",
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        }
    )
    return summary, compared
