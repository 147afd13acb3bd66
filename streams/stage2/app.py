"""The stage-2 worker: a faust-streaming app over the flagged topic.

One agent (``concurrency=1``) takes micro-batches (``stage2_batch_size`` within
``stage2_batch_wait_ms``) and scores each in one XGBoost call through the pure ``Scorer``.
A table keyed by card keeps per-card stage-2 context (flags, declines, last action), recovered
from its changelog topic after a restart. A record that cannot be decoded goes to the flagged
dead-letter topic; a transient scoring failure goes to the retry topics
(``<flagged>.retry.N``) with growing delays, then to the dead-letter topic.
The app is built by ``build_app`` (no global app at import time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson

from streams.errors import ModelError
from streams.kafka.topics import retry_topic
from streams.settings import Settings
from streams.stage2.policy import DecisionPolicy
from streams.stage2.scoring import ModelHolder, Scorer

log = logging.getLogger(__name__)
STAGE = "stage2"
RETRY_BASE_S = 1.0


def faust_broker_settings(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap_servers}",
        "broker_session_timeout": settings.session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.heartbeat_interval_ms / 1000,
    }
    if settings.sasl_mechanism and settings.sasl_username and settings.sasl_password:
        conf["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=_ssl_context(settings)
            if "SSL" in (settings.security_protocol or "")
            else None,
        )
    elif (settings.security_protocol or "").upper() == "SSL":
        conf["broker_credentials"] = faust.SSLCredentials(_ssl_context(settings))
    return conf


def _ssl_context(settings: Settings) -> Any:
    import ssl

    return ssl.create_default_context(cafile=settings.ssl_ca_location)


def _headers(event: Any) -> list[tuple[str, bytes]]:
    raw = event.message.headers or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def _header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def build_app(settings: Settings) -> faust.App:
    s = settings
    app = faust.App(
        s.stage2_app_id,
        store="memory://",
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
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
    decisions = app.topic(s.topic_decisions, **raw)
    dlq = app.topic(s.topic_flagged_dlq, **raw)
    # use_partitioner: table writes happen on batches (outside per-event iteration); producers use
    # Java-compatible murmur2 (clients.producer), so a card's changelog partition is its
    # flagged-topic partition.
    cards = app.Table(
        "stage2-card-context", default=dict, partitions=s.partitions, use_partitioner=True
    )
    stats: dict[str, Any] = {"scored": 0, "dead_letters": 0, "retried": 0, "ready": False}
    app.conf.stage2_stats = stats

    async def _ready(sender: Any, **kwargs: Any) -> None:
        stats["ready"] = True

    app.on_rebalance_complete.connect(_ready)  # type: ignore[arg-type]

    async def dead_letter(event: Any, kind: str, message: str) -> None:
        from streams.kafka.dlq import PREFIX

        msg = event.message
        headers = [h for h in _headers(event) if not h[0].startswith(PREFIX)]
        attempts = int(_header(_headers(event), "retry.attempt") or "0") + 1
        now = str(int(time.time() * 1000)).encode()
        headers += [
            (PREFIX + k, v)
            for k, v in {
                "source.topic": s.topic_flagged.encode(),
                "source.partition": str(msg.partition).encode(),
                "source.offset": str(msg.offset).encode(),
                "source.timestamp": str(int(msg.timestamp * 1000)).encode(),
                "stage": STAGE.encode(),
                "error.kind": kind.encode(),
                "error.message": message[:1000].encode(),
                "attempts": str(attempts).encode(),
                "first.failure.ms": (
                    _header(_headers(event), "retry.first.ms") or now.decode()
                ).encode(),
                "last.failure.ms": now,
            }.items()
        ]
        await dlq.send(key=msg.key, value=msg.value, headers=headers)
        stats["dead_letters"] += 1

    async def retry_or_dead(event: Any, attempt: int, error: str) -> None:
        if attempt >= s.stage2_max_attempts:
            await dead_letter(event, "transient", error)
            return
        now = int(time.time() * 1000)
        headers = [h for h in _headers(event) if not h[0].startswith("retry.")]
        first = _header(_headers(event), "retry.first.ms") or str(now)
        headers += [
            ("retry.attempt", str(attempt).encode()),
            ("retry.first.ms", first.encode()),
            ("retry.at.ms", str(now + int(RETRY_BASE_S * 1000 * 2 ** (attempt - 1))).encode()),
        ]
        await retries[attempt - 1].send(
            key=event.message.key, value=event.message.value, headers=headers
        )
        stats["retried"] += 1

    async def handle(events: list[Any], attempt: int) -> None:
        if holder.maybe_reload():
            scorer.swap(champion=holder.model)
        if challenger is not None and challenger.maybe_reload():
            scorer.swap(challenger=challenger.model)
        records, good = [], []
        for event in events:
            try:
                record = orjson.loads(event.message.value)
                if not isinstance(record, dict) or "features" not in record:
                    raise ValueError("not a flagged record")
                sent = _header(_headers(event), "sent_ms")
                if sent:
                    record["sent_ms"] = int(sent)
                records.append(record)
                good.append(event)
            except (orjson.JSONDecodeError, ValueError) as exc:
                await dead_letter(event, "decode", str(exc))
        try:
            decided = scorer.score_batch(records)
        except ModelError:
            decided = []
            for record, event in zip(records, good, strict=True):  # isolate the bad record
                try:
                    decided += scorer.score_batch([record])
                except ModelError as exc:
                    await dead_letter(event, "validation", str(exc))
                except Exception as exc:
                    await retry_or_dead(event, attempt + 1, repr(exc))
        except Exception as exc:
            log.warning("scoring failed (%s); sending %d records to retry", exc, len(good))
            for event in good:
                await retry_or_dead(event, attempt + 1, repr(exc))
            return
        for decision in decided:
            card = str(decision.get("card_id"))
            ctx = dict(cards[card])
            ctx["flags"] = ctx.get("flags", 0) + 1
            if decision["action"] == "decline":
                ctx["declines"] = ctx.get("declines", 0) + 1
            decision["card_context"] = {
                "flags": ctx["flags"],
                "declines": ctx.get("declines", 0),
                "previous_action": ctx.get("last_action"),
            }
            ctx["last_action"] = decision["action"]
            cards[card] = ctx
            sent = decision.pop("sent_ms", None)
            headers = [("sent_ms", str(sent).encode())] if sent is not None else []
            await decisions.send(
                key=str(decision["transaction_id"]).encode(),
                value=orjson.dumps(decision),
                headers=headers,
            )
        stats["scored"] += len(decided)

    @app.agent(flagged, concurrency=1)
    async def score(stream: Any) -> None:
        async for events in stream.take_events(
            s.stage2_batch_size, within=s.stage2_batch_wait_ms / 1000
        ):
            await handle(events, attempt=0)

    for attempt, topic in enumerate(retries, start=1):

        async def retry_agent(stream: Any, attempt: int = attempt) -> None:
            async for event in stream.events():
                due = int(_header(_headers(event), "retry.at.ms") or "0")
                delay = due / 1000 - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await handle([event], attempt=attempt)

        app.agent(topic, name=f"retry-{attempt}", concurrency=1)(retry_agent)
    return app


def is_ready(app: faust.App) -> bool:
    """Assigned its partitions (the first rebalance completed)."""
    return bool(app.conf.stage2_stats["ready"])


def run_worker(app: faust.App, loglevel: str = "WARNING") -> None:
    """Run the faust worker in the foreground until SIGTERM/SIGINT."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    worker.execute_from_commandline()
