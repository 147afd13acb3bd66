"""``train`` and ``evaluate``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from streams.cli.options import Bootstrap, BrokerKind, ConfigFile, RulesDir, settings_from
from streams.cli.progress import progress_bar


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)


def train(
    data: Path = typer.Option(..., "--data", help="handbook-format CSV with TX_FRAUD"),
    train_start: datetime = typer.Option(..., formats=["%Y-%m-%d"], help="first training day"),
    train_end: datetime = typer.Option(
        ..., formats=["%Y-%m-%d"], help="day after the last training day"
    ),
    out: Path = typer.Option(..., "--out", help="model directory to write"),
    seed: int = typer.Option(0, help="random seed (same seed, same model)"),
    valid_days: int = typer.Option(
        7,
        help="the training window's last days that validate the search (early stopping, "
        "parameters, policy thresholds); at most a third of the window",
    ),
    review_capacity: float = typer.Option(
        100.0,
        envvar="FRAUD_REVIEW_CAPACITY",
        help="cards a day analysts can review: sets the model's review threshold",
    ),
    decline_precision: float = typer.Option(
        0.9,
        envvar="FRAUD_DECLINE_PRECISION",
        help="share of declined transactions that must be fraud: sets the decline threshold",
    ),
    stage2_rows: str = typer.Option(
        "forwarded",
        help="rows stage 2 learns from: forwarded (those stage 1, run over the history with "
        "--rules, forwards: the ones stage 2 scores) or all",
    ),
    rules: RulesDir = None,
    config: ConfigFile = None,
) -> None:
    """Train the stage-2 XGBoost model from the stream features; write model, metadata, card.

    Stage 1 runs over the history first; stage 2 learns from the rows it forwarded. A seeded
    search (depth, learning rate, class weight; rounds by early stopping) validates on the
    window's last days and is refit on the whole window (docs/evaluation.md)."""
    from streams.data.handbook import read_handbook
    from streams.features.offline import compute_features
    from streams.rules.loader import SHIPPED_RULES
    from streams.training.train import stage1_verdicts, train_model

    if stage2_rows not in ("forwarded", "all"):
        raise typer.BadParameter("choose forwarded or all", param_hint="--stage2-rows")
    df = read_handbook(data)
    forwarded = None
    if stage2_rows == "forwarded":
        settings = settings_from(config, rules_dir=rules)
        rules_dir = settings.rules_dir
        if rules is None and not rules_dir.is_dir() and SHIPPED_RULES.is_dir():
            typer.echo(f"no {rules_dir}/ here: stage 1 runs with the shipped {SHIPPED_RULES}/")
            rules_dir = SHIPPED_RULES
        with progress_bar(df.height, "stage 1") as advance:
            features, forwarded = stage1_verdicts(df, settings, rules_dir, advance)
    else:
        with progress_bar(df.height, "features") as advance:
            features = compute_features(df, progress=advance)
    meta = train_model(
        df,
        train_start.date(),
        train_end.date(),
        out,
        seed=seed,
        valid_days=valid_days,
        review_capacity=review_capacity,
        decline_precision=decline_precision,
        features=features,
        forwarded=forwarded,
        source=str(data),
    )
    metrics = meta.get("metrics", {})
    typer.echo(
        f"model {meta.get('version')} written to {out}: "
        + ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, int | float))
    )


def evaluate(
    data: Path = typer.Option(..., "--data", help="handbook-format CSV with TX_FRAUD"),
    protocol: str = typer.Option("handbook-ch5", help="handbook-ch3 | handbook-ch5"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    rules: RulesDir = None,
    train_history_days: int = typer.Option(
        56,
        help="days of labelled history each fold trains on, ending with its training week "
        "(the handbook used 7; all labels are known before the test week)",
    ),
    through_kafka: bool = typer.Option(
        False, "--through-kafka", help="score the test weeks through the broker and both workers"
    ),
    features: str = typer.Option(
        "all",
        help="stage-2 feature set (the ablation): handbook, handbook+card-median, "
        "handbook+terminal-run, handbook+both, all",
    ),
    bootstrap: Bootstrap = None,
    broker: BrokerKind = None,
    config: ConfigFile = None,
) -> None:
    """Run the handbook's evaluation protocol through both stages; write metrics and report."""
    from streams.evaluation.run import evaluate as run

    settings = settings_from(
        config, bootstrap_servers=bootstrap, rules_dir=rules, broker_kind=broker
    )
    with progress_bar(None, "stage 1") as advance:
        metrics = run(
            data,
            protocol,
            out,
            rules,
            settings,
            train_history_days,
            advance,
            through_kafka=through_kafka,
            features=features,
            say=typer.echo,
        )
    mean = metrics.get("mean", {})
    typer.echo(
        f"wrote {out}/metrics.json: "
        + ", ".join(f"{k}={v:.4f}" for k, v in mean.items() if isinstance(v, float))
    )
    tk = metrics.get("through_kafka")
    if tk:
        typer.echo(
            f"through Kafka: {tk['rows_compared']:,} test transactions, the same forward verdicts "
            f"and scores as in-process (largest difference {tk['max_abs_score_difference']}, "
            f"publication rounding)"
        )
