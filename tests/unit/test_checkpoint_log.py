"""The stage-1 checkpointer says once per start, at INFO, that it wrote a checkpoint: operators
see checkpointing work, and the crash tests time a kill after it (``streams.crashtest``)."""

from __future__ import annotations

import logging

from streams.settings import load_settings
from streams.stage1.checkpointing import Checkpointer, Snapshot

SETTINGS = load_settings(bootstrap_servers="127.0.0.1:1", stage1_checkpoint_interval_s=1.0)


def _snapshot(*parts: int) -> Snapshot:
    return Snapshot("w:1", b"labels", {p: (100 + p, b"state-%d" % p) for p in parts})


def _infos(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_the_first_checkpoint_written_is_logged_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger="streams.stage1.checkpointing")
    checkpointer = Checkpointer(SETTINGS)
    produced: list[tuple] = []

    def produce(*args, **kwargs) -> None:
        produced.append((args, kwargs))

    checkpointer.write(_snapshot(0, 1), produce, owned=[1, 2])
    checkpointer.write(_snapshot(0, 1), produce, owned=[0, 1])
    assert _infos(caplog) == ["first checkpoint written: partitions [1]"]
    assert {kw["partition"] for _, kw in produced} == {0, 1}
    assert checkpointer.next_ids == {0: 1, 1: 2}


def test_nothing_owned_is_not_a_checkpoint(caplog) -> None:
    caplog.set_level(logging.INFO, logger="streams.stage1.checkpointing")
    checkpointer = Checkpointer(SETTINGS)
    checkpointer.write(_snapshot(0), lambda *a, **k: None, owned=[3])
    assert _infos(caplog) == []
    assert not checkpointer.wrote
