"""hive-c0re's TCP listeners (the dashboard's and each agent page's) hand out connections with
Nagle off: a response written in two parts (headers, then body) otherwise waits for the client's
delayed ACK, and every request to the dashboard took 40 ms longer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from api.agent_page_servers import bind_page_socket
from hive_c0re.c0re import bind_listener


@pytest.mark.parametrize(
    "bind",
    [
        lambda: bind_listener("127.0.0.1", 0, "HIVE_DASHBOARD_PORT"),
        lambda: bind_page_socket("127.0.0.1", 0),
    ],
    ids=["dashboard", "agent page"],
)
async def test_accepted_connections_send_at_once(bind: Callable[[], socket.socket]) -> None:
    listener = bind()
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            assert await asyncio.wait_for(accepted, 10) == 1
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
