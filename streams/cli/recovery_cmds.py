"""``replay``, ``dlq inspect`` and ``dlq redrive``: reprocessing and dead letters."""

from __future__ import annotations

import sys

import orjson
import typer

from streams.cli.options import Bootstrap, ConfigFile, ModelDir, RulesDir, settings_from
from streams.errors import ConfigError
from streams.settings import Settings

dlq_app = typer.Typer(help="Dead letters: inspect and redrive.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(replay)


def parse_time(value: str | None, flag: str) -> int | None:
    """ISO 8601 (UTC when no zone) or epoch milliseconds, as ``--from``/``--to`` take them."""
    if value is None:
        return None
    from streams.errors import ValidationError
    from streams.schema import parse_timestamp

    text = value.strip()
    try:
        return parse_timestamp(int(text) if text.lstrip("-").isdigit() else text)
    except ValidationError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _dlq_topics(settings: Settings, topic: str | None) -> list[str]:
    return [topic] if topic else [settings.topic_dlq, settings.topic_flagged_dlq]


def _print_json(data: object) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def replay(
    topic: str = typer.Option(..., "--topic", help="topic to replay (transactions or flagged)"),
    start: str = typer.Option(
        ..., "--from", help="event time, inclusive: ISO 8601 (UTC) or epoch ms"
    ),
    end: str = typer.Option(..., "--to", help="event time, exclusive: ISO 8601 (UTC) or epoch ms"),
    to_topic: str | None = typer.Option(
        None,
        "--to-topic",
        help="write decisions here (a shadow topic) instead of the live decisions topic",
    ),
    rules: RulesDir = None,
    model: ModelDir = None,
    replay_id: str | None = typer.Option(
        None, "--replay-id", help="id stamped on every replayed decision (default: random)"
    ),
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
) -> None:
    """Reprocess an event-time range of a topic with the current (or given) rules and model.

    State before --from is rebuilt from the topic's history, so the range is decided as the
    live run decided it. Decisions carry replay_id, and supersedes=true when written to the
    live decisions topic (they replace the earlier decisions of the same transaction ids).
    Prints a JSON summary."""
    from streams.cli.progress import progress_bar
    from streams.kafka.clients import broker_for
    from streams.kafka.topics import create_topics
    from streams.recovery.replay import estimate_records
    from streams.recovery.replay import replay as run_replay

    start_ms, end_ms = parse_time(start, "--from"), parse_time(end, "--to")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError("--to must be after --from")
    settings = settings_from(config, bootstrap_servers=bootstrap)
    with broker_for(settings) as s:
        if to_topic:
            create_topics(s, [to_topic])
        with progress_bar(estimate_records(s, topic), f"replay {topic}") as advance:
            stats = run_replay(
                s, topic, start_ms, end_ms, to_topic, rules, model, replay_id, progress=advance
            )
    _print_json(stats.as_dict())


@dlq_app.command("inspect")
def dlq_inspect(
    topic: str | None = typer.Option(
        None, "--topic", help="dead-letter topic (default: both stages' dead-letter topics)"
    ),
    samples: int = typer.Option(3, "--samples", min=0, help="samples shown per error kind"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
) -> None:
    """Count dead letters by stage and error kind, by age and by source; show a few samples."""
    from streams.kafka.clients import broker_for
    from streams.recovery.inspect import inspect_dlq, render

    settings = settings_from(config, bootstrap_servers=bootstrap)
    with broker_for(settings) as s:
        summaries = [inspect_dlq(s, t, samples) for t in _dlq_topics(s, topic)]
    if as_json:
        _print_json([x.as_dict() for x in summaries])
    else:
        render(summaries)


@dlq_app.command("redrive")
def dlq_redrive(
    topic: str | None = typer.Option(
        None, "--topic", help="dead-letter topic (default: both stages' dead-letter topics)"
    ),
    error: list[str] | None = typer.Option(
        None, "--error", help="only this error kind (repeatable): decode, validation, ..."
    ),
    since: str | None = typer.Option(
        None, "--since", help="only dead letters that last failed at or after this time"
    ),
    until: str | None = typer.Option(
        None, "--until", help="only dead letters that last failed before this time"
    ),
    partition: int | None = typer.Option(None, "--partition", help="only this DLQ partition"),
    from_offset: int | None = typer.Option(None, "--from-offset", help="only DLQ offsets >= this"),
    to_offset: int | None = typer.Option(None, "--to-offset", help="only DLQ offsets <= this"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be sent; send nothing"),
    bootstrap: Bootstrap = None,
    config: ConfigFile = None,
) -> None:
    """Send dead letters back to their source topic, each exactly once.

    What was sent is recorded in <dlq>.redriven (one marker per dead letter, written in the same
    Kafka transaction as the send), so running the same redrive again sends nothing twice.
    Prints a JSON summary per topic."""
    from streams.cli.progress import progress_bar
    from streams.kafka.clients import broker_for
    from streams.recovery.redrive import RedriveFilter
    from streams.recovery.redrive import redrive as run_redrive

    flt = RedriveFilter(
        kinds=frozenset(error) if error else None,
        since_ms=parse_time(since, "--since"),
        until_ms=parse_time(until, "--until"),
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
    )
    settings = settings_from(config, bootstrap_servers=bootstrap)
    results = []
    with broker_for(settings) as s:
        for t in _dlq_topics(s, topic):
            with progress_bar(None, f"redrive {t}") as advance:
                results.append(run_redrive(s, t, flt, dry_run, progress=advance))
    _print_json([r.as_dict() for r in results])
    sys.stdout.flush()
