"""``lists add``, ``lists remove`` and ``lists show``: value lists edited without a restart."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Value lists rules name with `FIELD IN LIST NAME` (RULES_DIR/lists/NAME.csv).",
    no_args_is_help=True,
)
_RULES = typer.Option(
    None, "--rules", help="rule directory (default: FRAUD_RULES_DIR, else ./rules)"
)


def _rules_dir(rules: Path | None) -> Path:
    from streams.cli.options import settings_from

    return rules if rules is not None else settings_from().rules_dir


@app.command()
def add(
    name: str = typer.Argument(..., help="list name, e.g. blocked_cards"),
    values: list[str] = typer.Argument(..., help="values to add"),
    expires: str | None = typer.Option(
        None, "--expires", help="expiry of the added values (ISO 8601 or epoch ms, UTC)"
    ),
    rules: Path | None = _RULES,
) -> None:
    """Add values (atomic rewrite of the file; running workers reload it)."""
    from streams.rules.lists import edit_list

    path, size = edit_list(_rules_dir(rules), name, add=values, expires=expires)
    typer.echo(f"{path}: {len(values)} value(s) added, {size} in the list")


@app.command()
def remove(
    name: str = typer.Argument(..., help="list name"),
    values: list[str] = typer.Argument(..., help="values to remove"),
    rules: Path | None = _RULES,
) -> None:
    """Remove values (atomic rewrite of the file; running workers reload it)."""
    from streams.rules.lists import edit_list

    path, size = edit_list(_rules_dir(rules), name, remove=values)
    typer.echo(f"{path}: {size} value(s) left in the list")


@app.command()
def show(name: str = typer.Argument(..., help="list name"), rules: Path | None = _RULES) -> None:
    """Print a list's values and their expiry."""
    from streams.rules.lists import entries_of, list_path
    from streams.schema import iso_utc

    path = list_path(_rules_dir(rules), name)
    entries = entries_of(path)
    for value in sorted(entries):
        expires = entries[value]
        typer.echo(value if expires is None else f"{value}\texpires {iso_utc(expires)}")
    typer.echo(f"{path}: {len(entries)} value(s)", err=True)
