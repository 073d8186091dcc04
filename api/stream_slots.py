"""A bound on the live event streams (SSE) one server holds open: each costs a connection, a
bus subscription and its polls, so a page opened in a loop must not exhaust hive-c0re.

Past HIVE_MAX_LIVE_STREAMS, a new stream is answered 503 `too_many_streams` at once; a slot is
given back when its stream ends (the client left, or the server is stopping).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send


class StreamSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


class CountedEventSource(EventSourceResponse):
    """An SSE response that gives its slot back however the connection ends (even one the
    client drops before the first event)."""

    def __init__(self, slots: StreamSlots, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


def slots_of(request: Request) -> StreamSlots:
    state = request.app.state
    slots: StreamSlots | None = getattr(state, "stream_slots", None)
    if slots is None:
        slots = StreamSlots(request.app.state.runtime.settings.max_live_streams)
        state.stream_slots = slots
    return slots


def too_many(slots: StreamSlots) -> JSONResponse:
    return JSONResponse(
        {
            "ok": False,
            "error": "too_many_streams",
            "message": f"this server already holds {slots.limit} live streams open",
            "hint": "close other dashboard or agent-page tabs (or raise HIVE_MAX_LIVE_STREAMS), "
            "then reload",
        },
        status_code=503,
        headers={"Retry-After": "5"},
    )
