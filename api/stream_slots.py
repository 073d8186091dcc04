"""A bound on the live event streams (SSE) hive-c0re holds open, in all and per client: each
costs a connection, a bus subscription and its polls, so a page opened in a loop must not
exhaust hive-c0re, and one client must not take every slot from the others.

The dashboard and the agent pages share one `StreamSlots` (hive-c0re passes it to both apps).
Past HIVE_MAX_LIVE_STREAMS in all, or HIVE_MAX_LIVE_STREAMS_PER_CLIENT from one address, a new
stream is answered 503 `too_many_streams` at once; a slot is given back when its stream ends
(the client left, or the server is stopping). api/sse.py takes and gives back the slots.
"""

from __future__ import annotations

from starlette.requests import Request

from api.refusals import RequestRefused
from hyperhive.settings import HiveSettings


class StreamSlots:
    def __init__(self, limit: int, per_client: int) -> None:
        self.limit = limit
        self.per_client = per_client
        self.open = 0
        self._by_client: dict[str, int] = {}

    def take(self, client: str) -> None:
        """Takes a slot for a stream of `client`'s; RequestRefused when there is none."""
        if self.open >= self.limit:
            raise too_many(
                f"hive-c0re already holds {self.limit} live streams open",
                "close other dashboard or agent-page tabs (or raise HIVE_MAX_LIVE_STREAMS)",
            )
        if self._by_client.get(client, 0) >= self.per_client:
            raise too_many(
                f"{client} already holds {self.per_client} live streams open",
                "close other dashboard or agent-page tabs (or raise "
                "HIVE_MAX_LIVE_STREAMS_PER_CLIENT)",
            )
        self.open += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1

    def give_back(self, client: str) -> None:
        self.open -= 1
        left = self._by_client.pop(client, 1) - 1
        if left:
            self._by_client[client] = left


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def stream_slots_for(settings: HiveSettings) -> StreamSlots:
    return StreamSlots(settings.max_live_streams, settings.max_live_streams_per_client)


def too_many(what: str, hint: str) -> RequestRefused:
    return RequestRefused(
        503, "too_many_streams", what, f"{hint}, then reload", headers={"Retry-After": "5"}
    )
