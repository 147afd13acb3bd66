"""The stage-2 agents' loops over their faust streams (anything with ``take_events``).

The flagged topic's agent keeps up to ``IN_FLIGHT`` batches in flight: while batch N is scored
in the scoring thread and batch N-1's outputs are delivered, faust takes and decodes batch N+1.
A retry topic's agent takes micro-batches too and waits, before each, until the latest record
of the batch is due (records arrive in the order they failed, so that is at most a batch late).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from streams.stage2.batches import BatchScorer
from streams.stage2.pipeline import IN_FLIGHT, Job, header


async def score_flagged(stream: Any, batches: BatchScorer, size: int, within_s: float) -> None:
    inflight: deque[tuple[Job, asyncio.Future[None]]] = deque()
    try:
        async for events in stream.take_events(size, within=within_s):
            job = await batches.begin(events, attempt=0)
            previous = inflight[-1][0] if inflight else None
            inflight.append((job, asyncio.ensure_future(batches.finish(job, previous))))
            while len(inflight) >= IN_FLIGHT or (inflight and inflight[0][1].done()):
                await inflight.popleft()[1]  # raises what stopped a batch
    finally:
        for _, pending in inflight:
            pending.cancel()


async def score_retries(
    stream: Any, batches: BatchScorer, attempt: int, size: int, within_s: float
) -> None:
    async for events in stream.take_events(size, within=within_s):
        due = max(int(header(e, "retry.at.ms") or "0") for e in events)
        delay = due / 1000 - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await batches.finish(await batches.begin(events, attempt=attempt))
