"""Stage-1 throughput: the real ``Stage1Worker`` in one or more processes (one consumer group)
over a pre-filled transactions backlog.

Each worker process builds its worker, then waits for the others, so all of them join the group
in the same generation and split the partitions from the first record on. The worker's own
``on_batch`` hook records a progress sample per batch; the parent stops every worker once the
group has consumed the whole backlog.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from streams.bench.backlog import SPAWN, BenchError, Rate, Sample, measured_rate, stop_children
from streams.settings import Settings


def _worker_child(
    settings: Settings,
    total: int,
    consumed: Any,  # multiprocessing.Value("q"): records the whole group has screened
    go: Any,  # multiprocessing.Event: every worker is built
    ready: Any,  # multiprocessing.Queue: a worker reports itself built
    results: Any,  # multiprocessing.Queue: (samples, stats) when done
) -> None:
    from streams.stage1.worker import Stage1Worker

    samples: list[Sample] = []
    worker: Stage1Worker

    def on_batch(out: Any) -> None:
        n = len(out.txs)
        samples.append((time.monotonic(), n))
        with consumed.get_lock():
            consumed.value += n

    def watch() -> None:
        while not worker.stop_event.wait(0.05):
            if consumed.value >= total:
                worker.stop_event.set()

    worker = Stage1Worker(settings, on_batch=on_batch)
    ready.put(True)
    go.wait(120)
    threading.Thread(target=watch, daemon=True).start()
    stats = worker.run()
    results.put(
        (
            samples,
            {
                "consumed": stats.consumed,
                "flagged": stats.flagged,
                "approved": stats.approved,
                "batches": stats.batches,
                "dead_letters": stats.dead_letters,
            },
        )
    )


def measure_stage1(settings: Settings, total: int, warmup: int, workers: int = 1) -> dict[str, Any]:
    """Stage-1 throughput of ``workers`` processes in one group over ``total`` backlog records
    (``settings.topic_transactions``, already filled). Polls are capped at a twentieth of the
    backlog, so even a tiny run yields enough per-poll samples for a rate (a full run's polls
    are not affected)."""
    settings = settings.model_copy(
        update={"stage1_poll_size": min(settings.stage1_poll_size, max(100, total // 20))}
    )
    consumed = SPAWN.Value("q", 0)
    go, ready, results = SPAWN.Event(), SPAWN.Queue(), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=_worker_child,
            args=(settings, total, consumed, go, ready, results),
            daemon=True,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        outcomes: list[tuple[list[Sample], dict[str, int]]] = []
        deadline = time.monotonic() + 600
        while len(outcomes) < workers:
            try:
                outcomes.append(results.get(timeout=1.0))
                continue
            except queue.Empty:
                pass
            if time.monotonic() > deadline:
                raise BenchError("stage-1 workers did not finish within 10 minutes")
            dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
            if dead:
                raise BenchError(f"a stage-1 worker exited with code {dead[0].exitcode}")
    finally:
        stop_children(procs)
    samples = [s for outcome in outcomes for s in outcome[0]]
    rate: Rate = measured_rate(samples, warmup)
    per_worker = [outcome[1] for outcome in outcomes]
    return {
        **rate.as_dict(),
        "workers": workers,
        "warmup": warmup,
        "flagged": sum(w["flagged"] for w in per_worker),
        "per_worker": per_worker,
    }
