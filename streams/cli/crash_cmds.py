"""``crashtest``: kill workers -9 under load and report what the decisions topic holds."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.cli.options import Bootstrap, BrokerKind, ConfigFile, settings_from


def register(app: typer.Typer) -> None:
    app.command()(crashtest)


def crashtest(
    customers: int = typer.Option(400, min=1, help="simulated cards (about 2 transactions/day)"),
    days: int = typer.Option(60, min=8, help="simulated days of traffic"),
    rate: float = typer.Option(3000.0, min=1.0, help="transactions per second offered"),
    stage1_workers: int = typer.Option(2, "--stage1-workers", min=1),
    kills_stage1: int = typer.Option(3, "--kills-stage1", min=0, help="kill -9 of stage-1 workers"),
    kills_stage2: int = typer.Option(3, "--kills-stage2", min=0, help="kill -9 of stage 2"),
    poison: int = typer.Option(7, min=0, help="malformed messages mixed into the traffic"),
    labels: bool = typer.Option(True, help="publish the delayed labels with the traffic"),
    exactly_once: bool = typer.Option(False, "--exactly-once", help="stage 1 in exactly-once"),
    stage2_exactly_once: bool = typer.Option(
        False, "--stage2-exactly-once", help="stage 2 in faust's exactly-once mode"
    ),
    seed: int = typer.Option(7),
    json_path: Path | None = typer.Option(None, "--json", help="also write the verdict here"),
    logs: Path = typer.Option(Path("out/crashtest"), help="directory for the workers' logs"),
    bootstrap: Bootstrap = None,
    broker: BrokerKind = None,
    config: ConfigFile = None,
) -> None:
    """Send simulated traffic (labels and poisoned messages included) through worker processes
    started here, kill them -9 at random moments and restart them, then report lost,
    duplicated and differing decisions and dead letters. Topics, group and app id are the
    run's own, so a shared broker's topics are left alone. Exits 1 when anything was lost, a
    duplicate differs in any byte, or a poisoned message has no dead letter."""
    import orjson

    from streams.crashtest.runner import CrashTest, Plan
    from streams.kafka.clients import broker_for

    settings = settings_from(config, bootstrap_servers=bootstrap, broker_kind=broker)
    plan = Plan(
        customers=customers,
        days=days,
        seed=seed,
        rate=rate,
        labels=labels,
        poison=poison,
        stage1_workers=stage1_workers,
        kills_stage1=kills_stage1,
        kills_stage2=kills_stage2,
        exactly_once=exactly_once,
        stage2_exactly_once=stage2_exactly_once,
    )
    with broker_for(settings) as live:
        outcome = CrashTest(live, plan, log_dir=logs).run()
    result = outcome.as_dict()
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if not outcome.verdict.ok:
        raise typer.Exit(1)
