"""Memory per card: the resident growth of a process whose stage-1 ``Screener`` (the real
``FeatureEngine``, online models and label cache) has screened one transaction of each of
``cards`` distinct cards, measured in a fresh child process with psutil after a full collection.

The transactions are built the way the worker decodes them (fresh strings for every id) with
terminals drawn from 10,000 and event times a few milliseconds apart. The figure includes the
bounded label cache of the online classifier (``label_cache_size`` rows), which a worker holds
whatever its number of cards.
"""

from __future__ import annotations

import gc
import queue
import random
from typing import Any

from streams.bench.backlog import SPAWN, BenchError, stop_children
from streams.settings import Settings

T0_MS = 1_522_540_800_000  # 2018-04-01


def _child(settings: Settings, cards: int, results: Any) -> None:
    import psutil

    from streams.rules.loader import load_rules
    from streams.schema import Transaction
    from streams.stage1.screen import Screener

    rng = random.Random(7)
    process = psutil.Process()
    screener = Screener.from_settings(settings, load_rules(settings.rules_dir))
    size = settings.stage1_batch_size

    def batch(start: int, end: int) -> list[Transaction]:
        return [
            Transaction(
                f"tx-{i:09d}",
                f"card-{i:09d}",
                str(rng.randrange(10_000)),
                round(rng.uniform(1.0, 150.0), 2),
                T0_MS + i * 3,
                {},
            )
            for i in range(start, end)
        ]

    warm = batch(cards, cards + size)  # other cards: the state before counts as baseline
    screener.screen(warm)
    del warm
    gc.collect()
    before = process.memory_info().rss
    for start in range(0, cards, size):
        screener.screen(batch(start, min(cards, start + size)))
    gc.collect()
    after = process.memory_info().rss
    held = len(screener.engine.cards) - size
    results.put(
        {
            "cards": held,
            "rss_mb": after / 2**20,
            "growth_mb": (after - before) / 2**20,
            "bytes_per_card": (after - before) / held,
        }
    )


def measure_memory(settings: Settings, cards: int) -> dict[str, Any]:
    results = SPAWN.Queue()
    proc = SPAWN.Process(target=_child, args=(settings, cards, results), daemon=True)
    proc.start()
    try:
        while True:
            try:
                out: dict[str, Any] = results.get(timeout=1.0)
                break
            except queue.Empty:
                if not proc.is_alive():
                    raise BenchError(f"memory probe exited with code {proc.exitcode}") from None
    finally:
        stop_children([proc])
    return {
        "cards": out["cards"],
        "rss_mb": round(out["rss_mb"], 1),
        "state_mb": round(out["growth_mb"], 1),
        "bytes_per_card": round(out["bytes_per_card"], 1),
    }
