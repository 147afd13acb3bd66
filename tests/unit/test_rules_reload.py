"""Hot reload: valid edits swap in between batches, invalid ones leave the old set in place."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from streams.errors import RuleError
from streams.rules import RuleReloader, RuleResult


def fast(directory: Path, **kwargs: Any) -> RuleReloader:
    """A reloader with short watch delays, for tests."""
    return RuleReloader(directory, debounce_ms=100, step_ms=10, tick_ms=50, **kwargs)


def rule(rule_id: str, when: str = "TX_AMOUNT > 220", **extra: object) -> str:
    keys = {"id": rule_id, "description": "d", "when": when, "action": "flag", "score": 0.9}
    keys |= {"reason": "R", **extra}
    return "  - {" + ", ".join(f"{k}: {v}" for k, v in keys.items()) + "}\n"


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "a.yaml").write_text("# amounts\nrules:\n" + rule("big"))
    return tmp_path


def test_valid_edit_is_swapped_in(rules_dir: Path) -> None:
    with fast(rules_dir) as reloader:
        assert reloader.wait_ready(10)
        old = reloader.current()
        assert not reloader.maybe_reload() or reloader.current().version == old.version
        (rules_dir / "a.yaml").write_text("rules:\n" + rule("big") + rule("spike", "TX_HOUR < 6"))
        assert wait_for(reloader.maybe_reload)
        assert reloader.current().ids == ("big", "spike")
        assert reloader.current().version != old.version
        assert (reloader.reload_successes, reloader.reload_failures) == (1, 0)
        assert not reloader.maybe_reload()  # nothing new


def test_invalid_edit_keeps_the_old_set_then_a_fix_wins(rules_dir: Path) -> None:
    errors: list[RuleError] = []
    with fast(rules_dir, on_error=errors.append) as reloader:
        assert reloader.wait_ready(10)
        old = reloader.current()
        (rules_dir / "a.yaml").write_text("rules:\n" + rule("big", "AMOUNT > 1"))

        def failed() -> bool:
            reloader.maybe_reload()
            return reloader.reload_failures >= 1

        assert wait_for(failed)
        assert reloader.current() is old
        assert reloader.reload_successes == 0
        assert "unknown field `AMOUNT`" in errors[0].problems[0]
        assert reloader.last_error is errors[0]
        (rules_dir / "a.yaml").write_text("rules:\n" + rule("fixed"))
        assert wait_for(reloader.maybe_reload)
        assert reloader.current().ids == ("fixed",)
        assert reloader.reload_successes == 1


def test_editor_writing_in_steps_ends_with_the_good_set(rules_dir: Path) -> None:
    with fast(rules_dir) as reloader:
        assert reloader.wait_ready(10)
        text = "rules:\n" + rule("big") + rule("night", "TX_HOUR < 6")
        path = rules_dir / "a.yaml"
        with path.open("w") as handle:  # truncate, half a file, pause, the rest
            handle.write(text[:60])
            handle.flush()
            assert wait_for(lambda: reloader.maybe_reload() or reloader.reload_failures > 0)
            handle.write(text[60:])
        assert wait_for(lambda: reloader.maybe_reload() or reloader.current().ids[-1] == "night")
        assert reloader.current().ids == ("big", "night")
        assert reloader.reload_failures >= 1


def test_failing_examples_refuse_a_reload(rules_dir: Path) -> None:
    bad = rule("big", examples="[{fields: {TX_AMOUNT: 10}, expect: fire}]")
    with fast(rules_dir) as reloader:
        assert reloader.wait_ready(10)
        (rules_dir / "a.yaml").write_text("rules:\n" + bad)
        assert wait_for(lambda: not reloader.maybe_reload() and reloader.reload_failures > 0)
        assert reloader.current().ids == ("big",)
        assert "example expects fire, got no_fire" in str(reloader.last_error)


def test_invalid_directory_at_start_raises(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no rule files"):
        RuleReloader(tmp_path)


def test_without_watching_only_reload_now_reloads(rules_dir: Path) -> None:
    reloader = RuleReloader(rules_dir, watch=False)
    (rules_dir / "b.yaml").write_text("rules:\n" + rule("other"))
    time.sleep(0.2)
    assert not reloader.maybe_reload() and reloader.current().ids == ("big",)
    assert reloader.reload_now() and reloader.current().ids == ("big", "other")
    reloader.close()


def version_file(k: int) -> str:
    """Version k of the rewritten file, in YAML flow style: any strict prefix is invalid YAML,
    so a reader catching a half-written file can never see a smaller but valid set."""
    rules = [
        f"{{id: v{k}_a, description: d, when: TX_AMOUNT >= 0, action: flag, score: 0.9,"
        f" reason: A{k}}}",
        f"{{id: v{k}_b, description: d, when: TX_HOUR >= 0, action: tag, score: 0.5,"
        f" reason: B{k}}}",
        f"{{id: v{k}_c, description: d, when: TX_AMOUNT >= 0, action: flag, score: 0.8,"
        f" reason: C{k}, shadow: true}}",
    ]
    return f"# version {k}\nrules: [\n  " + ",\n  ".join(rules) + "\n]\n"


def rewrite(path: Path, k: int) -> None:
    text = version_file(k)
    if k % 3 == 0:  # atomic replace, as careful editors and config tools do
        tmp = path.with_name(".live.yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:  # in place, in two steps
        with path.open("w") as handle:
            handle.write(text[: len(text) // 2])
            handle.flush()
            time.sleep(0.005)
            handle.write(text[len(text) // 2 :])
    if k % 10 == 5:  # a broken save, left long enough for the worker to try it
        time.sleep(0.05)
        path.write_text(text.replace("TX_HOUR", "HOUR"))
        time.sleep(0.3)
        path.write_text(text)


def test_reload_under_load(tmp_path: Path) -> None:
    static = "rules:\n" + rule("static_all", "TX_AMOUNT >= 0", action="tag", score=0.1)
    (tmp_path / "static.yaml").write_text(static)
    live = tmp_path / "live.yaml"
    live.write_text(version_file(0))
    versions = 40
    expected = {k: {f"v{k}_a", f"v{k}_b", f"v{k}_c", "static_all"} for k in range(versions)}
    reloader = fast(tmp_path)
    assert reloader.wait_ready(10)
    batches: queue.Queue[pl.DataFrame | None] = queue.Queue(maxsize=8)
    judged: list[tuple[int, str, frozenset[str], RuleResult]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            while (batch := batches.get()) is not None:
                reloader.maybe_reload()  # between batches only
                ruleset = reloader.current()
                result = ruleset.evaluate(batch)
                judged.append((batch.height, ruleset.version, frozenset(ruleset.ids), result))
        except BaseException as exc:
            failures.append(exc)

    def writer() -> None:
        for k in range(1, versions):
            rewrite(live, k)
            time.sleep(0.02)

    threads = [threading.Thread(target=worker), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    rng = np.random.default_rng(1)
    sent_rows, sent = 0, 0
    deadline = time.monotonic() + 60
    while threads[1].is_alive() or set(reloader.current().ids) != expected[versions - 1]:
        assert time.monotonic() < deadline, "final version never loaded"
        n = int(rng.integers(1, 500))
        batch = pl.DataFrame({"TX_AMOUNT": rng.random(n) * 300, "TX_HOUR": rng.random(n) * 23})
        batches.put(batch)
        sent_rows, sent = sent_rows + n, sent + 1
    batches.put(None)
    for thread in threads:
        thread.join(30)
    reloader.close()
    assert not failures, failures

    assert len(judged) == sent and sum(rows for rows, *_ in judged) == sent_rows  # none lost
    seen: dict[str, frozenset[str]] = {}
    for rows, version, ids, result in judged:
        assert seen.setdefault(version, ids) == ids  # one version, one content
        assert result.version == version and len(result) == rows
        (k,) = [k for k, want in expected.items() if ids == want]  # exactly one written version
        assert result.fired == [[f"v{k}_a", f"v{k}_b", "static_all"]] * rows
        assert result.shadow_fired == [[f"v{k}_c"]] * rows
        assert result.reasons == [[f"A{k}", f"B{k}", "R"]] * rows
        assert result.flag.all() and set(result.hits.values()) == {rows}
    assert judged[-1][2] == expected[versions - 1]
    assert len(seen) >= 3 and reloader.reload_successes >= 2
    assert reloader.reload_failures >= 1
