"""The command-line contract (shared/docs/CLI.md): every command has ``--help``; a user error is
one ``error:`` line on stderr, a non-zero exit and no traceback."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from streams import __version__
from streams.cli.main import app, main
from tests.support import REPO, assert_one_error_line

HEADER = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_FRAUD"
GOOD_ROW = "0,2018-04-01 00:00:31,1,2,10.5,0"


def command_paths() -> list[list[str]]:
    """Every command and subcommand of the typer app, found by walking it (a new command is
    covered without touching this test)."""

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FRAUD_"):
            monkeypatch.delenv(name)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``fraudstream ARGV`` in this process, through the real entry point ``main``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err


# --- help and version -----------------------------------------------------------------------------
def test_the_app_has_the_documented_commands() -> None:
    names = {" ".join(p) for p in command_paths()}
    for documented in (
        "demo",
        "broker",
        "topics create",
        "stage1",
        "stage2",
        "simulate",
        "produce",
        "features",
        "train",
        "evaluate",
        "rules validate",
        "rules test",
        "rules backtest",
        "config show",
    ):
        assert documented in names


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "fraudstream")
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "--help" in result.output


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"fraudstream {__version__}"


def test_shell_completion_options_exist() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.output
    assert "--show-completion" in result.output


def test_show_completion_prints_a_script(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--show-completion", "bash"], capsys)
    assert code == 0
    assert "_fraudstream_completion" in out


def test_completion_completes_subcommands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_FRAUDSTREAM_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "fraudstream rules ")
    monkeypatch.setenv("COMP_CWORD", "2")
    code, out, _ = run([], capsys)
    assert code == 0
    assert out.split() == ["validate", "test", "backtest"]


# --- usage errors ---------------------------------------------------------------------------------
def test_missing_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["features", "--out", "x.csv"], capsys)
    assert code == 2
    assert_one_error_line(code, err, "--data", "fraudstream features --help")


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["no-such-command"], capsys)
    assert_one_error_line(code, err, "no-such-command")


def test_bad_option_value_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["topics", "create", "--partitions", "many"], capsys)
    assert_one_error_line(code, err, "--partitions")


# --- missing and bad data files -------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["features", "--data", "{missing}", "--out", "{tmp}/f.csv"],
        [
            "train",
            "--data",
            "{missing}",
            "--train-start",
            "2018-04-01",
            "--train-end",
            "2018-04-08",
            "--out",
            "{tmp}/model",
        ],
        ["produce", "--data", "{missing}", "--bootstrap", "127.0.0.1:1"],
    ],
    ids=["features", "train", "produce"],
)
def test_missing_data_file(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.csv"
    args = [a.format(missing=missing, tmp=tmp_path) for a in argv]
    started = time.monotonic()
    code, _, err = run(args, capsys)
    assert_one_error_line(code, err, "data file not found", str(missing))
    assert time.monotonic() - started < 5  # produce reads its data before any broker


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def features(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, _, err = run(["features", "--data", str(path), "--out", str(tmp_path / "o.csv")], capsys)
    return code, err


def test_csv_missing_column_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        "0,2018-04-01 00:00:31,1,2,0",
        header="TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_FRAUD",
    )
    code, err = features(path, tmp_path, capsys)
    assert_one_error_line(code, err, "missing column", "TX_AMOUNT")


@pytest.mark.parametrize(
    ("row", "column", "shown"),
    [
        ("1,2018-04-01 00:01:31,1,2,abc,0", "TX_AMOUNT", "'abc'"),
        ("1,2018-04-01 00:01:31,1,2,-5,0", "TX_AMOUNT", "-5"),
        ("1,yesterday,1,2,3.0,0", "TX_DATETIME", "'yesterday'"),
        ("1,2018-04-01 00:01:31,1,2,3.0,maybe", "TX_FRAUD", "'maybe'"),
        ("1,2018-04-01 00:01:31,,2,3.0,0", "CUSTOMER_ID", "missing value"),
        ("1,2018-04-01 00:01:31,1,2", "TX_AMOUNT", "missing value"),
    ],
)
def test_csv_bad_value_names_row_and_column(
    row: str, column: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "t.csv", GOOD_ROW, row)
    code, err = features(path, tmp_path, capsys)
    assert_one_error_line(code, err, "row 3", f"column {column}", shown)


def test_csv_bad_value_after_type_inference_names_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"{i},2018-04-01 00:00:31,1,2,10.5,0" for i in range(10_050)]
    rows[10_040] = "10040,2018-04-01 00:00:31,1,2,ten,0"
    code, err = features(write_csv(tmp_path / "t.csv", *rows), tmp_path, capsys)
    assert_one_error_line(code, err, "row 10042", "column TX_AMOUNT", "'ten'")


def test_csv_ragged_row_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [f"{i},2018-04-01 00:00:31,1,2,10.5,0" for i in range(10_050)]
    rows[10_040] += ",extra"
    code, err = features(write_csv(tmp_path / "t.csv", *rows), tmp_path, capsys)
    assert_one_error_line(code, err, "row 10042", "7 fields")


def test_empty_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    code, err = features(path, tmp_path, capsys)
    assert_one_error_line(code, err, "empty.csv")


# --- rules ----------------------------------------------------------------------------------------
BAD_RULES = """\
rules:
  - id: r1
    description: x
    when: NO_SUCH_FIELD > 1
    action: flag
    score: 0.5
    reason: R
  - id: r2
    description: y
    when: TX_AMOUNT > 1
    action: explode
    score: 0.5
    reason: R
"""


def test_rules_validate_prints_file_line_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_RULES)
    code, _, err = run(["rules", "validate", str(tmp_path)], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{tmp_path / 'bad.yaml'}:4",
        f"{tmp_path / 'bad.yaml'}:11",
    ]
    assert "Traceback" not in err


def test_rules_validate_of_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["rules", "validate", str(tmp_path / "nope")], capsys)
    assert code == 1
    assert "nope" in err
    assert "Traceback" not in err


def test_rules_test_on_invalid_rules_prints_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_RULES)
    code, _, err = run(["rules", "test", str(tmp_path)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"error: {tmp_path / 'bad.yaml'}:") for line in lines)


def test_the_shipped_rules_validate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rules", "validate", str(REPO / "rules")], capsys)
    assert code == 0
    assert "rules valid" in out


# --- model, config --------------------------------------------------------------------------------
def test_stage2_missing_model_fails_before_any_broker(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams.kafka.clients as clients

    def no_broker(*args: object, **kwargs: object) -> None:
        raise AssertionError("a broker was contacted or started before the model was checked")

    monkeypatch.setattr(clients, "broker_for", no_broker)
    monkeypatch.setattr(clients.EmbeddedBroker, "start", no_broker)
    code, _, err = run(["stage2", "--model", "/nonexistent"], capsys)
    assert_one_error_line(code, err, "model directory not found", "/nonexistent")


def test_stage2_broken_model_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.ubj").write_bytes(b"not a model")
    code, _, err = run(["stage2", "--model", str(tmp_path)], capsys)
    assert_one_error_line(code, err, str(tmp_path), "metadata.json")


def test_bad_config_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code, _, err = run(["config", "show", "--config", str(missing)], capsys)
    assert_one_error_line(code, err, "config file not found", str(missing))


def test_bad_config_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_CONFIG", str(tmp_path / "nope.yaml"))
    code, _, err = run(["config", "show"], capsys)
    assert_one_error_line(code, err, "config file not found", "FRAUD_CONFIG")


def test_config_file_with_an_unknown_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("bootstap_servers: kafka:9092\n")
    code, _, err = run(["config", "show", "--config", str(path)], capsys)
    assert_one_error_line(code, err, "unknown setting", "bootstap_servers")


def test_config_file_with_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("partitions: 3\nbootstrap_servers: [\n")
    code, _, err = run(["config", "show", "--config", str(path)], capsys)
    assert_one_error_line(code, err, f"{path}:", "invalid YAML")


def test_invalid_setting_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_PARTITIONS", "many")
    code, _, err = run(["config", "show"], capsys)
    assert_one_error_line(code, err, "partitions", "'many'")


def test_train_learns_stage2_from_the_rows_stage1_forwards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from streams.data.simulate import simulate, write_csv

    data = write_csv(simulate(customers=150, terminals=300, days=45, seed=3), tmp_path / "h.csv")
    window = ["--train-start", "2018-04-15", "--train-end", "2018-05-01"]
    rules = ["--rules", str(REPO / "rules")]
    code, _, err = run(
        ["train", "--data", str(data), *window, "--out", str(tmp_path / "m"), *rules], capsys
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["training_rows"] == "forwarded by stage 1"
    assert meta["class_balance"]["train"]["rows"] < meta["class_balance"]["window"]["rows"]
    every = ["--stage2-rows", "all", "--out", str(tmp_path / "a")]
    code, _, err = run(["train", "--data", str(data), *window, *every], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["training_rows"] == "all"
    assert meta["class_balance"]["train"] == meta["class_balance"]["window"]
    bad = ["--stage2-rows", "some", "--out", str(tmp_path / "b")]
    code, _, err = run(["train", "--data", str(data), *window, *bad], capsys)
    assert_one_error_line(code, err, "--stage2-rows")
