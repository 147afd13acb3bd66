"""Stage 2's faust transport creates topics with a broker down (``streams.kafka.faust_fetch``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import NodeNotReadyError, TopicAuthorizationFailedError
from faust.transport.drivers import aiokafka as driver

from streams.kafka.faust_fetch import _Transport


class Owner:
    should_stop = False

    async def wait(self, coro: Any, timeout: float) -> Any:
        return SimpleNamespace(stopped=False, result=await coro)


class Client:
    """Brokers 0, 1, 2 in the metadata; the ones in ``down`` refuse requests."""

    def __init__(self, down: set[int]):
        self.down = down
        self.asked: list[int] = []
        self.cluster = SimpleNamespace(
            brokers=lambda: [SimpleNamespace(nodeId=i) for i in range(3)]
        )

    async def send(self, node: int, request: Any) -> Any:
        self.asked.append(node)
        if node in self.down:
            raise NodeNotReadyError(f"node {node} not ready")
        return SimpleNamespace(controller_id=2)

    async def force_metadata_update(self) -> bool:
        return True


def test_the_controller_is_asked_of_the_next_broker_when_the_first_is_down() -> None:
    client = Client(down={0})
    transport = object.__new__(_Transport)
    assert asyncio.run(transport._get_controller_node(Owner(), client)) == 2
    assert client.asked == [0, 1]  # faust 0.15.3 asked broker 0 only, and the worker exited


def test_no_broker_answers_raises_the_last_error() -> None:
    transport = object.__new__(_Transport)
    with pytest.raises(NodeNotReadyError):
        asyncio.run(transport._get_controller_node(Owner(), Client(down={0, 1, 2})))


def test_topic_creation_retries_retriable_errors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    errors: list[Exception] = [NodeNotReadyError("down"), RuntimeError("Invalid controller: 0")]

    async def create(self: Any, owner: Any, client: Any, topic: str, *args: Any, **kw: Any) -> None:
        calls.append(topic)
        if errors:
            raise errors.pop(0)

    monkeypatch.setattr(driver.Transport, "_create_topic", create)
    sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda seconds: sleep(0))
    transport = object.__new__(_Transport)
    asyncio.run(transport._create_topic(Owner(), Client(set()), "t", 4, 3))
    assert calls == ["t", "t", "t"]

    errors[:] = [TopicAuthorizationFailedError("no")]
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(transport._create_topic(Owner(), Client(set()), "u", 4, 3))
    assert calls[-1] == "u" and calls.count("u") == 1
