"""The event bus: in-process publish/subscribe on string topics.

Topics in use:
- `inbox:<agent>`   a message was stored for <agent> (or `inbox:operator`): wakes `recv`
- `messages`        every message, for the dashboard
- `agent-events:<agent>`  claude stream events of the agent's turns and hive's notes

The bus carries notifications only; the store is the record. A subscriber that falls behind
loses its oldest events (counted in `Subscription.dropped`), and a publisher never waits.

`Bus` is the interface the rest of hyperhive uses; `EventBus` is the in-process implementation,
and `hyperhive.pg_bus.PgBus` wraps one to carry the topics between hive-c0re processes that share
a PostgreSQL store (LISTEN/NOTIFY; `hyperhive.bus_select.open_bus` picks one for a store URL).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol

__all__ = ["DEFAULT_QUEUE_SIZE", "Bus", "EventBus", "Subscription"]

log = logging.getLogger(__name__)

Event = dict[str, Any]

DEFAULT_QUEUE_SIZE = 1000


class Subscription(Protocol):
    """Events of one topic published after `subscribe` returned, oldest first.

    Use as a context manager (`with bus.subscribe(t) as sub:`) or call `close()`; iterate with
    `async for event in sub`, or `await sub.get()`, or `await sub.wait(timeout)`.
    """

    @property
    def topic(self) -> str: ...

    @property
    def dropped(self) -> int:
        """How many events were discarded because this subscriber lagged behind."""
        ...

    async def get(self) -> Event: ...

    def get_nowait(self) -> Event | None: ...

    async def wait(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """True as soon as one or more events are queued (and discards them); False on timeout."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Subscription: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[Event]: ...


class Bus(Protocol):
    def publish(self, topic: str, event: Event) -> None:
        """Deliver `event` to the topic's current subscribers. Never blocks; any thread."""
        ...

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> Subscription:
        """Start receiving the topic's events (call from the event loop that will read them)."""
        ...

    async def wait(self, topic: str, timeout: float | None) -> bool:  # noqa: ASYNC109
        """True when an event is published on `topic` within `timeout` seconds, else False.

        Only events published after the call count: to wait for "something changed since I
        looked", subscribe before looking and then `Subscription.wait` (no lost wake-ups).
        """
        ...


class _Subscription:
    """One subscriber's bounded queue. Touched only from its event loop's thread."""

    def __init__(self, bus: EventBus, topic: str, maxsize: int, loop: asyncio.AbstractEventLoop):
        self._bus = bus
        self._topic = topic
        self._maxsize = maxsize
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._dropped = 0
        self.loop = loop

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning(
                    "event bus: a subscriber of %r lags behind; %d events dropped so far",
                    self._topic,
                    self._dropped,
                )
        self._queue.append(event)
        self._ready.set()

    def get_nowait(self) -> Event | None:
        if not self._queue:
            return None
        event = self._queue.popleft()
        if not self._queue:
            self._ready.clear()
        return event

    async def get(self) -> Event:
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            if self._closed:
                raise EOFError(f"subscription to {self._topic!r} is closed")
            self._ready.clear()
            await self._ready.wait()

    async def wait(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        if not self._queue and not self._closed:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return False
        had = bool(self._queue)
        self._queue.clear()
        self._ready.clear()
        return had

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        self._ready.set()  # wake a pending get(), which then ends

    def __enter__(self) -> _Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None


class EventBus:
    """The in-process bus. Publishing is thread-safe: from a thread other than a subscriber's
    event loop, the event is handed to that loop with `call_soon_threadsafe`."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._topics: dict[str, set[_Subscription]] = {}
        self.published = 0

    def subscriber_count(self, topic: str) -> int:
        with self._lock:
            return len(self._topics.get(topic, ()))

    def active_topics(self) -> list[str]:
        """The topics that have subscribers now (a bus that lost events wakes them all)."""
        with self._lock:
            return list(self._topics)

    def publish(self, topic: str, event: Event) -> None:
        with self._lock:
            self.published += 1
            subscribers = tuple(self._topics.get(topic, ()))
        if not subscribers:
            return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for sub in subscribers:
            if sub.loop is here:
                sub.put(event)
                continue
            try:
                sub.loop.call_soon_threadsafe(sub.put, event)
            except RuntimeError:  # its loop is closed: nobody will read it any more
                self._unsubscribe(sub)

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> _Subscription:
        size = self._queue_size if maxsize is None else maxsize
        if size < 1:
            raise ValueError(f"maxsize must be at least 1, got {size}")
        sub = _Subscription(self, topic, size, asyncio.get_running_loop())
        with self._lock:
            self._topics.setdefault(topic, set()).add(sub)
        return sub

    async def wait(self, topic: str, timeout: float | None) -> bool:  # noqa: ASYNC109
        with self.subscribe(topic, maxsize=1) as sub:
            return await sub.wait(timeout)

    def _unsubscribe(self, sub: _Subscription) -> None:
        with self._lock:
            subs = self._topics.get(sub.topic)
            if subs is None:
                return
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]
