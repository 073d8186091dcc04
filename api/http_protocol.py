"""uvicorn's h11 protocol with a deadline for reading a request (its headers and its body).

uvicorn times out only idle keep-alive connections: a client that opens a connection and sends
its headers a byte at a time (slowloris), or whole headers and then a body that never comes
(`Content-Length: 100` and one byte), holds it forever, and 500 of them hold 500 sockets and
their buffers. Here a connection gets HIVE_HTTP_HEADER_TIMEOUT_S to deliver a whole request from
the moment it starts waiting for one (connected, or its last response sent); bytes trickling in
do not push the deadline back. Once the request has arrived, the app takes as long as it takes
(a live stream, a long-poll) — that is not timed here.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeaderDeadlineProtocol(H11Protocol):
    header_timeout_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def _reading_request(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete or cycle.more_body

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._reading_request() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_request():
            self._arm()
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """The protocol class for uvicorn.Config(http=…), closing a connection that has not
    delivered a whole request `timeout_s` after it began waiting for one."""
    return type(
        "HeaderDeadlineProtocol", (_HeaderDeadlineProtocol,), {"header_timeout_s": timeout_s}
    )
