"""Topic creation (idempotent). Names come from the settings, and only from there."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from streams.errors import TopicError
from streams.kafka.clients import admin
from streams.settings import Settings

log = logging.getLogger(__name__)

# Every topic here holds records stamped with event time (transactions from 2018 in a replayed
# history, their labels, decisions, flagged records, retries and dead letters keep the source
# timestamp). Kafka's time retention compares those stamps with the wall clock, so with the
# default 7 days a closed segment of a replayed history would be deleted at once: keep it all.
# (Stage 2's faust changelog topics are faust's own, compacted.)
TOPIC_CONFIG = {"retention.ms": "-1"}
# State topics (stage-1 checkpoints, stage 2's card-table changelog): only each key's latest
# record matters. One-minute segments let the cleaner compact soon (it never touches the active
# segment), and the lag bound keeps what the topic holds beyond each key's latest record to about
# five minutes of writes (ten checkpoints of each partition at the default interval), whatever
# the topic's age.
COMPACTION_TUNING = {
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": "300000",
}
CHECKPOINT_TOPIC_CONFIG = {"cleanup.policy": "compact", **COMPACTION_TUNING}


def topic_config(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus ``min.insync.replicas`` when the settings set it (``min_insync_replicas``)."""
    if settings.min_insync_replicas is None:
        return dict(base)
    return {**base, "min.insync.replicas": str(settings.min_insync_replicas)}


def retry_topic(topic: str, attempt: int) -> str:
    """Retry topics are named after the topic they retry: ``transactions.flagged.retry.1``."""
    return f"{topic}.retry.{attempt}"


def topic_names(settings: Settings) -> list[str]:
    names = [
        settings.topic_transactions,
        settings.topic_flagged,
        settings.topic_decisions,
        settings.topic_labels,
        settings.topic_dlq,
        settings.topic_flagged_dlq,
        settings.topic_checkpoints,
    ]
    names += [
        retry_topic(settings.topic_flagged, a) for a in range(1, settings.stage2_max_attempts)
    ]
    return names


def scoped(settings: Settings, prefix: str, *, source: str | None = None) -> Settings:
    """Settings whose topics, stage-1 group and stage-2 app id are ``prefix``-ed (one run's
    own; ``source`` keeps a shared transactions topic)."""
    return settings.model_copy(
        update={
            "topic_transactions": source or f"{prefix}.transactions",
            "topic_flagged": f"{prefix}.flagged",
            "topic_decisions": f"{prefix}.decisions",
            "topic_labels": f"{prefix}.labels",
            "topic_dlq": f"{prefix}.dlq",
            "topic_flagged_dlq": f"{prefix}.flagged.dlq",
            "topic_checkpoints": f"{prefix}.stage1.checkpoints",
            "stage1_group": f"{prefix}.stage1",
            "stage2_app_id": f"{prefix}.stage2",
        }
    )


def create_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create missing topics (with ``TOPIC_CONFIG``, and ``min.insync.replicas`` when
    ``min_insync_replicas`` is set); returns the names created. Existing topics are left
    alone."""
    client = admin(settings)
    wanted = names or topic_names(settings)
    existing = set(client.list_topics(timeout=10).topics)
    missing = [n for n in wanted if n not in existing]
    if not missing:
        return []
    futures = client.create_topics(
        [
            NewTopic(
                n,
                settings.partitions,
                settings.replication_factor,
                config=topic_config(
                    settings,
                    CHECKPOINT_TOPIC_CONFIG if n == settings.topic_checkpoints else TOPIC_CONFIG,
                ),
            )
            for n in missing
        ],
        operation_timeout=10,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicError(f"cannot create topic {name}: {exc.args[0].str()}") from None
    log.info("created topics: %s", ", ".join(created))
    return created
