"""QuietServer (api/unix_socket.py): uvicorn that sleeps while idle (no 100 ms tick: the idle
CPU of 200 agents is measured in bench/idle_agents.py) yet still answers correctly, keeps its
housekeeping and stops when told."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from api.http_protocol import header_deadline_protocol
from api.unix_socket import QuietServer, bind_unix_socket
from hyperhive.errors import HiveError


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await PlainTextResponse("hi")(scope, receive, send)


async def _get(path: Path) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        return await http.get("/")


async def _serve(tmp_path: Path, **config: object) -> tuple[QuietServer, asyncio.Task[None], Path]:
    path = tmp_path / "s.sock"
    sock = bind_unix_socket(path, "a test socket", HiveError)
    server = QuietServer(uvicorn.Config(hello, lifespan="off", log_config=None, **config))  # type: ignore[arg-type]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    return server, serving, path


async def test_an_idle_server_answers_with_a_current_date_and_stops_when_told(
    tmp_path: Path,
) -> None:
    server, serving, path = await _serve(tmp_path)
    try:
        answer = await _get(path)  # connecting waits for the listener: no start-up race
        assert answer.text == "hi"
        # The date header is no longer refreshed by a timer: it must still be today's.
        date = parsedate_to_datetime(answer.headers["date"]).timestamp()
        assert abs(date - time.time()) < 5
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
    assert serving.done() and serving.exception() is None


async def test_housekeeping_still_runs_a_request_limit_stops_the_server(tmp_path: Path) -> None:
    server, serving, path = await _serve(tmp_path, limit_max_requests=1)
    try:
        assert (await _get(path)).text == "hi"
        await asyncio.wait_for(asyncio.shield(serving), 10)  # stops by itself after 1 request
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_should_exit_before_the_loop_runs_stops_it() -> None:
    server = QuietServer(uvicorn.Config(hello, lifespan="off"))
    server.should_exit = True
    await asyncio.wait_for(server.main_loop(), 10)


def test_a_socket_in_a_dir_others_can_write_is_never_chmod_ed_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's socket dir is writable from its sandbox: between bind and chmod it could swap
    the socket's name for a symlink to a host file (hive-c0re runs as root). The chmod happens
    in a private dir before the socket is renamed into place."""
    tmp_path.chmod(0o700)
    agent_dir = tmp_path / "agents" / "alice"
    agent_dir.mkdir(parents=True)
    agent_dir.chmod(0o777)
    chmodded: list[str] = []
    real_chmod = os.chmod

    def recording_chmod(path: Any, mode: int, **kwargs: Any) -> None:
        chmodded.append(os.fspath(path))
        real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(os, "chmod", recording_chmod)
    sock = bind_unix_socket(agent_dir / "mcp.sock", "alice's MCP", HiveError)
    try:
        assert chmodded and not any(p.startswith(os.fspath(agent_dir)) for p in chmodded)
        assert stat.S_IMODE((agent_dir / "mcp.sock").stat().st_mode) == 0o660
        assert sorted(p.name for p in tmp_path.iterdir()) == ["agents"], "no scratch left"
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(os.fspath(agent_dir / "mcp.sock"))
        client.close()
    finally:
        sock.close()


async def test_a_client_slow_with_its_headers_is_cut_off_and_a_normal_one_is_not(
    tmp_path: Path,
) -> None:
    server, serving, path = await _serve(tmp_path, http=header_deadline_protocol(0.5))
    try:
        assert (await _get(path)).text == "hi"
        started = time.monotonic()
        # Slowloris: a request line and a header, then nothing more.
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b"", "closed without an answer"
        assert time.monotonic() - started < 5
        writer.close()
        # A whole request, then a slow start of the next one on the same connection.
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"hi"), 10)
        assert answer.startswith(b"HTTP/1.1 200")
        writer.write(b"GET / HT")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
