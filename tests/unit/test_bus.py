"""The in-process event bus: topics, bounded queues that drop the oldest, thread-safe publish,
and the wait used by recv's long-poll."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hyperhive.bus import Bus, EventBus
from tests.rig.polling import eventually


def test_event_bus_implements_the_bus_interface():
    bus: Bus = EventBus()
    assert bus is not None


async def test_subscribers_get_their_topics_events_in_order():
    bus = EventBus()
    with (
        bus.subscribe("inbox:alice") as alice,
        bus.subscribe("inbox:alice") as alice2,
        bus.subscribe("inbox:bob") as bob,
    ):
        bus.publish("inbox:alice", {"n": 1})
        bus.publish("inbox:bob", {"n": 2})
        bus.publish("inbox:alice", {"n": 3})
        assert [await alice.get(), await alice.get()] == [{"n": 1}, {"n": 3}]
        assert [await alice2.get(), await alice2.get()] == [{"n": 1}, {"n": 3}]
        assert await bob.get() == {"n": 2}
        assert alice.get_nowait() is None and bob.get_nowait() is None


async def test_events_before_subscribing_are_not_delivered():
    bus = EventBus()
    bus.publish("messages", {"early": True})
    with bus.subscribe("messages") as sub:
        assert sub.get_nowait() is None


async def test_publish_without_subscribers_is_cheap_and_harmless():
    bus = EventBus()
    started = time.perf_counter()
    for i in range(10_000):
        bus.publish("messages", {"i": i})
    assert time.perf_counter() - started < 1.0
    assert bus.published == 10_000


async def test_a_lagging_subscriber_drops_its_oldest_events_and_counts_them():
    bus = EventBus()
    with bus.subscribe("t", maxsize=3) as slow, bus.subscribe("t", maxsize=100) as fast:
        for i in range(10):
            bus.publish("t", {"i": i})  # never blocks, whatever the subscribers do
        assert slow.dropped == 7
        assert [slow.get_nowait(), slow.get_nowait(), slow.get_nowait()] == [
            {"i": 7},
            {"i": 8},
            {"i": 9},
        ]
        assert fast.dropped == 0
        assert len([fast.get_nowait() for _ in range(10)]) == 10


async def test_async_iteration_ends_when_closed():
    bus = EventBus()
    sub = bus.subscribe("t")
    got: list[dict[str, object]] = []

    async def read() -> None:
        async for event in sub:
            got.append(event)

    reader = asyncio.create_task(read())
    bus.publish("t", {"a": 1})
    bus.publish("t", {"a": 2})
    await eventually(lambda: len(got) == 2, timeout=2, what="the reader to take both events")
    sub.close()
    await asyncio.wait_for(reader, 2)
    assert got == [{"a": 1}, {"a": 2}]


async def test_closing_unsubscribes():
    bus = EventBus()
    with bus.subscribe("t"):
        assert bus.subscriber_count("t") == 1
    assert bus.subscriber_count("t") == 0
    sub = bus.subscribe("t")
    sub.close()
    sub.close()
    bus.publish("t", {"late": True})
    assert sub.get_nowait() is None


async def test_publish_from_another_thread_reaches_the_loop():
    bus = EventBus()
    with bus.subscribe("t", maxsize=1000) as sub:

        def publisher() -> None:
            for i in range(200):
                bus.publish("t", {"i": i})

        threads = [threading.Thread(target=publisher) for _ in range(3)]
        for t in threads:
            t.start()
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(600)]
        for t in threads:
            t.join()
    assert sorted(e["i"] for e in got) == sorted(list(range(200)) * 3)


async def test_subscription_wait_sees_events_from_before_the_wait():
    bus = EventBus()
    with bus.subscribe("inbox:alice", maxsize=1) as sub:
        assert await sub.wait(0.01) is False
        bus.publish("inbox:alice", {"id": 1})  # between "look" and "wait": not lost
        started = time.perf_counter()
        assert await sub.wait(5) is True
        assert time.perf_counter() - started < 0.5
        assert await sub.wait(0.01) is False  # the wait consumed it


async def test_bus_wait_returns_on_publish_or_times_out():
    bus = EventBus()
    started = time.perf_counter()
    assert await bus.wait("inbox:bob", 0.05) is False
    assert time.perf_counter() - started >= 0.04

    async def later() -> None:
        # Subscribing and blocking happen without a yield between: once subscribed, it waits.
        await eventually(lambda: bus.subscriber_count("inbox:bob") == 1, timeout=5, what="a wait")
        bus.publish("inbox:bob", {"id": 1})

    task = asyncio.create_task(later())
    started = time.perf_counter()
    assert await bus.wait("inbox:bob", 10) is True
    assert time.perf_counter() - started < 1
    await task
    assert bus.subscriber_count("inbox:bob") == 0


async def test_wait_wakes_on_a_publish_from_another_thread():
    bus = EventBus()
    with bus.subscribe("inbox:bob", maxsize=1) as sub:
        threading.Timer(0.05, bus.publish, args=("inbox:bob", {"id": 1})).start()
        started = time.perf_counter()
        assert await sub.wait(10) is True
        assert time.perf_counter() - started < 1


def test_publish_after_the_subscribers_loop_is_closed_drops_it():
    bus = EventBus()
    loop = asyncio.new_event_loop()

    async def subscribe() -> None:
        bus.subscribe("t")

    loop.run_until_complete(subscribe())
    loop.close()
    bus.publish("t", {"x": 1})  # from no loop at all: must not raise
    assert bus.subscriber_count("t") == 0


def test_queue_sizes_are_checked():
    with pytest.raises(ValueError):
        EventBus(queue_size=0)
