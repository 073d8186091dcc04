"""Reading a server-sent event stream (an open httpx streaming response) the way a browser's
EventSource does: `data:` lines joined, `event:` defaulting to "message", comments skipped."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


class SseStream:
    def __init__(self, response: httpx.Response, *, timeout: float = 10.0) -> None:
        self._lines = response.aiter_lines()
        self.timeout = timeout

    async def next(self) -> dict[str, Any]:
        """The next event: {"event", "data", and "id"/"retry" when sent}."""
        async with asyncio.timeout(self.timeout):
            return await self._next()

    async def until(
        self, kind: str, contains: str = "", *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The next `kind` event whose data contains `contains`; other events are skipped."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while True:
                event = await self._next()
                if event["event"] == kind and contains in event["data"]:
                    return event

    async def _next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        async for line in self._lines:
            if not line:
                if "data" in event:
                    event.setdefault("event", "message")
                    return event
                event = {}
                continue
            if line.startswith(":"):
                continue  # a keep-alive ping
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                event["data"] = event["data"] + "\n" + value if "data" in event else value
            else:
                event[field] = value
        raise AssertionError("the event stream ended")
