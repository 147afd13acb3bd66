"""faust's drain loop without four asyncio tasks per record.

faust-streaming 0.15.3 hands each fetched record to its topic's stream with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: a task for the callback,
one for the flow event, two more for the consumer's stopped and crashed events, an
``asyncio.wait`` over the four, and three cancellations, for every record. The callback itself
almost never waits: it decodes the record and puts the event in the stream's queue without
blocking (a queue under pressure pauses the partition's fetch instead). It waits only while the
flow is stopped (a rebalance), the producer's buffer is full or a queue is full, and only then
must the loop also watch the flow event, so a rebalance does not hang on a record the stream
will never take.

``EagerDrainConsumer`` runs the callback's first step in the drain loop itself. If the callback
completes there (the usual case), the record was delivered with no task at all; if it waits,
the rest of it runs exactly as faust runs the whole callback: a task, raced against the flow
event by ``wait_first``. Everything else (gaps, commits, read offsets, the yield to the event
loop every 100 records, errors) is faust's loop, line for line. Measured on one Apache Kafka
broker over a 80,000-record flagged backlog: see ``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING

log = logging.getLogger(__name__)


DONE = object()


def _first_step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its first wait: ``DONE`` when it completed (its result dropped, as
    faust drops the callback's), else what it yielded to wait on (a future, or None for a
    bare yield such as ``asyncio.sleep(0)``). Its exception propagates."""
    try:
        return coro.send(None)
    except StopIteration:
        return DONE


class _Rest:
    """The rest of a coroutine that waited on ``pending`` in its first step, as an awaitable a
    task can run (``asyncio.ensure_future`` wraps it, as ``wait_first`` does): the task waits
    on ``pending`` and then steps the coroutine on, passing in what the task passes (a value,
    or an exception such as a cancellation)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any):
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # passed on, as a task does
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class EagerDrainConsumer:
    """Mixin for a ``faust.transport.consumer.Consumer`` subclass (before it in the bases).
    ``handed`` counts the records handed to the streams, ``waited`` those whose callback had to
    wait (logged when the loop ends)."""

    handed: int = 0
    waited: int = 0

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust's loop
        this = cast(Any, self)
        callback = this.callback
        getmany = this.getmany
        consumer_should_stop = this._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = this._read_offset.__getitem__
        set_read_offset = this._read_offset.__setitem__
        set_flag = this.diag.set_flag
        unset_flag = this.diag.unset_flag
        commit_every = this._commit_every
        acks_enabled_for = this.app.topics.acks_enabled_for
        flow_stopped = this.suspend_flow.is_set
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
                await this.sleep(0)
                if not this.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await this._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and this._n_acked >= commit_every:
                                this._n_acked = 0
                                await this.commit()
                            this.handed += 1
                            coro = callback(message)
                            if flow_stopped():  # faust's way: the record is dropped
                                await this.wait_first(coro, this.suspend_flow.wait())
                            else:
                                pending = _first_step(coro)
                                if pending is not DONE:  # it waits: race it against the flow
                                    this.waited += 1
                                    await this.wait_first(
                                        _Rest(coro, pending), this.suspend_flow.wait()
                                    )
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except this.consumer_stopped_errors:
            if this.transport.app.should_stop:
                this.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if this.transport.app.should_stop:
                this.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            this.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)
            log.info(
                "drain loop ended: %d records handed to the streams, %d of them waited",
                this.handed,
                this.waited,
            )
