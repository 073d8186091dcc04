"""The one loop behind hive-c0re's live streams (server-sent events): the dashboard's message
flow (api/dashboard_stream.py) and an agent page's turn events (api/agent_pages.py).

A stream sends what its `Feed` says. It subscribes to the feed's bus topic before the feed's
first look at the store, so whatever is stored in between still wakes it: the bus only wakes a
stream and the store says what is new, so a lagging subscription loses wake-ups, never events.
Then it looks, sends, and waits for a wake-up, the feed's poll interval or its page server
closing, over and over. It ends when hive-c0re stops, when its page server closes or when the
feed says so; a client that leaves ends it too (sse-starlette cancels it).

`live_stream` answers the request: a keep-alive comment every PING_S, and a slot
(api/stream_slots.py) held for as long as the stream is open, or 503 `too_many_streams` at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from enum import Enum
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from api.stream_slots import StreamSlots, client_of
from control.runtime import CoreRuntime
from hyperhive.bus import Subscription

# Keeps idle connections (and proxies between) from timing out.
PING_S = 15
# Tells EventSource how soon to reconnect after the stream ends (hive-c0re restarting).
RETRY_MS = 2000
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

Event = ServerSentEvent | bytes


class Next(Enum):
    """What a stream does after a look at its feed."""

    WAIT = "wait"  # caught up: wait for a wake-up, the poll interval or the end
    AGAIN = "again"  # more is stored than one look sends: look again at once
    END = "end"  # nothing more will come


class Feed(ABC):
    """What one stream sends: `opening` once, then `news` at every look."""

    def __init__(self, topic: str, *, wake_buffer: int, poll_s: float) -> None:
        self.topic = topic
        self.wake_buffer = wake_buffer
        self.poll_s = poll_s
        self.next_step = Next.WAIT

    @abstractmethod
    def opening(self) -> AsyncIterator[Event]:
        """The first events: the feed's subscription is open, it has not looked yet."""

    @abstractmethod
    def news(self) -> AsyncIterator[Event]:
        """What is new since the last look; sets `next_step`."""


async def live_events(
    runtime: CoreRuntime, feed: Feed, closing: asyncio.Event | None = None
) -> AsyncIterator[Event]:
    with runtime.broker.bus.subscribe(feed.topic, maxsize=feed.wake_buffer) as wake:
        async for event in feed.opening():
            yield event
        # hive-c0re clears `workers_running` just before it stops its web servers, which would
        # otherwise wait forever for the open streams to end.
        was_running = runtime.workers_running
        while closing is None or not closing.is_set():
            if was_running and not runtime.workers_running:
                return
            async for event in feed.news():
                yield event
            if feed.next_step is Next.END:
                return
            if feed.next_step is Next.WAIT:
                await _woken(wake, feed.poll_s, closing)


async def _woken(wake: Subscription, poll_s: float, closing: asyncio.Event | None) -> None:
    """Until the topic has news, `poll_s` passes, or the page server closes."""
    if closing is None:
        await wake.wait(poll_s)
        return
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(wake.wait(poll_s)),
        asyncio.create_task(closing.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def live_stream(
    request: Request,
    runtime: CoreRuntime,
    slots: StreamSlots,
    feed: Feed,
    closing: asyncio.Event | None = None,
) -> EventSourceResponse:
    """The response streaming `feed`; RequestRefused (503) when no slot is free."""
    client = client_of(request)
    slots.take(client)
    events = live_events(runtime, feed, closing)
    return _SlotHoldingEventSource(slots, client, events, ping=PING_S, headers=HEADERS)


class _SlotHoldingEventSource(EventSourceResponse):
    """Gives its slot back however the connection ends (even one the client drops before the
    first event)."""

    def __init__(self, slots: StreamSlots, client: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back(self._client)
