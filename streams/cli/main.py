"""The ``fraudstream`` command (typer).

A user error prints one line on stderr, ``error: ...``, and exits 2 without a traceback: our own
errors (``FraudstreamError``) and command-line usage errors alike. A rule set with several
problems prints one ``error: file:line: message`` line per problem.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from streams import __version__
from streams.cli import (
    bench_cmds,
    crash_cmds,
    data_cmds,
    kafka_cmds,
    lists_cmds,
    model_cmds,
    ops_cmds,
    recovery_cmds,
    rules_cmds,
    worker_cmds,
)
from streams.errors import FraudstreamError, RuleError

USAGE_EXIT = 2
ERROR_EXIT = 2
INTERRUPTED_EXIT = 130

# The click exception classes typer raises (typer >= 0.24 vendors its own click): found from the
# public ``typer.BadParameter`` so that this works whichever click typer uses.
_CLICK = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
UsageError: type[Exception] = _CLICK["UsageError"]
ClickException: type[Exception] = _CLICK["ClickException"]

app = typer.Typer(
    name="fraudstream",
    help="Kafka-native two-stage fraud detection: stage 1 screens every transaction, "
    "stage 2 scores the suspicious few with XGBoost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fraudstream {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """fraudstream: see README.md for the flow, topics and configuration."""


for module in (
    kafka_cmds,
    worker_cmds,
    data_cmds,
    model_cmds,
    ops_cmds,
    recovery_cmds,
    bench_cmds,
    crash_cmds,
):
    module.register(app)
app.add_typer(rules_cmds.app, name="rules")
app.add_typer(lists_cmds.app, name="lists")
app.add_typer(recovery_cmds.dlq_app, name="dlq")
app.add_typer(ops_cmds.config_app, name="config")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="fraudstream", standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
            sys.exit(USAGE_EXIT)
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "fraudstream"
        _error(f"{_one_line(exc.format_message())} (see `{command} --help`)")  # type: ignore[attr-defined]
        sys.exit(USAGE_EXIT)
    except ClickException as exc:  # e.g. a FileError
        _error(_one_line(exc.format_message()))  # type: ignore[attr-defined]
        sys.exit(int(getattr(exc, "exit_code", 1)))
    except typer.Abort:  # EOF or Ctrl-C while parsing or prompting
        typer.echo("interrupted", err=True)
        sys.exit(INTERRUPTED_EXIT)
    except RuleError as exc:
        for problem in exc.problems or ["invalid rule set"]:
            _error(_one_line(problem))
        sys.exit(ERROR_EXIT)
    except FraudstreamError as exc:
        _error(_one_line(str(exc)) or type(exc).__name__)
        sys.exit(ERROR_EXIT)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(INTERRUPTED_EXIT)
    sys.exit(result if isinstance(result, int) else 0)
