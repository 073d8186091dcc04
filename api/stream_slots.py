"""A bound on the live event streams (SSE) hive-c0re holds open, in all and per client: each
costs a connection, a bus subscription and its polls, so a page opened in a loop must not
exhaust hive-c0re, and one client must not take every slot from the others.

The dashboard and the agent pages share one `StreamSlots` (hive-c0re passes it to both apps).
Past HIVE_MAX_LIVE_STREAMS in all, or HIVE_MAX_LIVE_STREAMS_PER_CLIENT from one address, a new
stream is answered 503 `too_many_streams` at once; a slot is given back when its stream ends
(the client left, or the server is stopping).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hyperhive.settings import HiveSettings


class StreamSlots:
    def __init__(self, limit: int, per_client: int) -> None:
        self.limit = limit
        self.per_client = per_client
        self.open = 0
        self._by_client: dict[str, int] = {}

    def take(self, client: str) -> JSONResponse | None:
        """None when the stream may open (its slot taken), else the refusal to answer."""
        if self.open >= self.limit:
            return too_many(
                f"hive-c0re already holds {self.limit} live streams open",
                "close other dashboard or agent-page tabs (or raise HIVE_MAX_LIVE_STREAMS)",
            )
        if self._by_client.get(client, 0) >= self.per_client:
            return too_many(
                f"{client} already holds {self.per_client} live streams open",
                "close other dashboard or agent-page tabs (or raise "
                "HIVE_MAX_LIVE_STREAMS_PER_CLIENT)",
            )
        self.open += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1
        return None

    def give_back(self, client: str) -> None:
        self.open -= 1
        left = self._by_client.pop(client, 1) - 1
        if left:
            self._by_client[client] = left


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class CountedEventSource(EventSourceResponse):
    """An SSE response that gives its slot back however the connection ends (even one the
    client drops before the first event)."""

    def __init__(self, slots: StreamSlots, client: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back(self._client)


def slots_of(request: Request) -> StreamSlots:
    """The app's slots (hive-c0re gives both apps the same); an app built alone makes its own."""
    state = request.app.state
    slots: StreamSlots | None = getattr(state, "stream_slots", None)
    if slots is None:
        slots = state.stream_slots = stream_slots_for(state.runtime.settings)
    return slots


def stream_slots_for(settings: HiveSettings) -> StreamSlots:
    return StreamSlots(settings.max_live_streams, settings.max_live_streams_per_client)


def too_many(what: str, hint: str) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error": "too_many_streams", "message": what, "hint": f"{hint}, then reload"},
        status_code=503,
        headers={"Retry-After": "5"},
    )
