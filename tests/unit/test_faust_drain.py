"""The drain loop's eager first step: a callback that completes runs without a task, and one that
waits goes on in a task exactly as if the task had run it from the start."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.faust_drain import DONE, _first_step, _Rest


async def _completes(log: list[str]) -> str:
    log.append("ran")
    return "result"


async def _fails() -> None:
    raise ValueError("bad record")


async def _waits(log: list[str], fut: asyncio.Future[int]) -> int:
    log.append("before")
    got = await fut
    log.append(f"got {got}")
    await asyncio.sleep(0)  # a bare yield after the first wait
    log.append("after")
    return got * 2


async def _yields_first(log: list[str]) -> str:
    await asyncio.sleep(0)  # its first step yields None, not a future
    log.append("after yield")
    return "done"


def test_a_callback_that_does_not_wait_completes_in_its_first_step() -> None:
    log: list[str] = []
    assert _first_step(_completes(log)) is DONE
    assert log == ["ran"]


def test_a_failing_callback_raises_from_its_first_step() -> None:
    with pytest.raises(ValueError, match="bad record"):
        _first_step(_fails())


def test_a_waiting_callback_goes_on_in_a_task_to_its_end() -> None:
    async def main() -> tuple[int, list[str]]:
        log: list[str] = []
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        coro = _waits(log, fut)
        pending = _first_step(coro)
        assert pending is fut and log == ["before"]
        task = asyncio.ensure_future(_Rest(coro, pending))
        await asyncio.sleep(0)
        assert not task.done()  # still waiting on fut
        fut.set_result(21)
        return await task, log

    result, log = asyncio.run(main())
    assert result == 42
    assert log == ["before", "got 21", "after"]


def test_a_callback_whose_first_step_yields_none_is_not_taken_as_done() -> None:
    async def main() -> tuple[str, list[str]]:
        log: list[str] = []
        coro = _yields_first(log)
        pending = _first_step(coro)
        assert pending is None and pending is not DONE and log == []
        return await asyncio.ensure_future(_Rest(coro, pending)), log

    assert asyncio.run(main()) == ("done", ["after yield"])


def test_an_exception_set_on_the_awaited_future_reaches_the_callback() -> None:
    async def catches(fut: asyncio.Future[int]) -> str:
        try:
            await fut
        except KeyError:
            return "handled"
        return "not raised"

    async def main() -> str:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        coro = catches(fut)
        task = asyncio.ensure_future(_Rest(coro, _first_step(coro)))
        fut.set_exception(KeyError("x"))
        return await task

    assert asyncio.run(main()) == "handled"


def test_cancelling_the_task_cancels_the_waiting_callback() -> None:
    """What ``wait_first`` does to the callback when the flow stops first."""
    cleaned: list[str] = []

    async def waits_forever(fut: asyncio.Future[None]) -> None:
        try:
            await fut
        finally:
            cleaned.append("finally ran")

    async def main() -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        coro = waits_forever(fut)
        task = asyncio.ensure_future(_Rest(coro, _first_step(coro)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return fut.cancelled()

    assert asyncio.run(main()) is True  # the cancellation reached the awaited future
    assert cleaned == ["finally ran"]
