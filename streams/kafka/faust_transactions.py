"""faust's transactions (``processing_guarantee="exactly_once"``) made to commit exactly what was
processed: the source partition's transactional id, a barrier between batches and commits, and
aborting a partition's open transaction before it is processed again (see
``streams.stage2.exactly_once`` for why each is needed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


class CommitBarrier:
    """Batches enter before their first output and leave once acked; ``quiet()`` holds new
    batches and waits until none is inside (a commit, an abort)."""

    def __init__(self) -> None:
        self._inside = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._quieting = asyncio.Lock()

    async def enter(self) -> None:
        while not self._open.is_set():
            await self._open.wait()
        self._inside += 1
        self._idle.clear()

    def leave(self) -> None:
        self._inside -= 1
        if self._inside <= 0:
            self._inside = 0
            self._idle.set()

    @contextlib.asynccontextmanager
    async def quiet(self) -> AsyncIterator[None]:
        async with self._quieting:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


def transactional_id(app: Any, topic: str, partition: int) -> str:
    """faust's transactional id for a source partition (``TransactionManager.commit``)."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(topic)}-{partition}"


async def restart_transactions(app: Any, tps: list[Any]) -> None:
    """Abort the open transactions of source partitions ``tps`` (their outputs since the last
    commit) and begin new ones; faust logs and carries on when one had none open."""
    producer = app.producer
    for tid in sorted({transactional_id(app, tp.topic, tp.partition) for tp in tps}):
        await producer.abort_transaction(tid)
        await producer.begin_transaction(tid)
