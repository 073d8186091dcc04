"""Live streams opened in a loop cannot take hive-c0re down (issue 13, "operator surfaces").

Before: with large pending approvals, 50 dashboard streams took hive-c0re from 0.8 to 1.5 GB
and `/health` to 9 s, 200 made `/health` answer 503; 100 agent-page streams over large turn
events took 5.9 GB and kept 3.7 GB after they closed.

Here the real `hive c0re` holds 20 pending approvals with 128 KiB diffs each and 500 turn events
of 64 KiB each; 500 clients open the dashboard's stream and 500 alice's event stream, 100 of them
from one address. Those past the bounds (12 per client, 32 in all) are refused at once with
`too_many_streams`; the daemon's memory stays bounded while
they are open and after they close, and `/health` answers within a second throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hyperhive.models import NewApproval
from hyperhive.store import approvals as approval_store
from hyperhive.store.agents import append_turn_events
from tests.rig.c0re import RunningC0re, StartC0re

pytestmark = pytest.mark.integration

CLIENTS = int(__import__("os").environ.get("ABUSE_CLIENTS", "500"))
DIFF_BYTES = 128 * 1024
EVENT_BYTES = 64 * 1024
# What the daemon may grow by while the streams are open and hold after they closed: far less
# than one copy of the approvals (2.5 MiB) per stream, far less than the gigabytes seen before.
MAX_GROWTH_OPEN = 200 << 20
MAX_GROWTH_AFTER = 150 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def assistant_text(text: str) -> dict[str, Any]:
    """As claude's stream-json reports a reply."""
    message = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    return {"type": "assistant", "message": message, "session_id": "s"}


def fill(hive: RunningC0re) -> None:
    engine = hive.engine()
    for i in range(20):
        diff = "".join(f"+line {i}-{n} {'x' * 60}\n" for n in range(DIFF_BYTES // 70))
        approval_store.create_approval(
            engine,
            NewApproval(
                kind="apply_commit",
                agent="alice",
                requester="hm1nd",
                description=f"change {i}",
                workflow_id=f"abuse-{i}",
                diff=diff,
            ),
        )
    for turn in range(5):
        events = [
            (seq, "assistant", assistant_text(f"{turn}-{seq} " + "y" * EVENT_BYTES))
            for seq in range(100)
        ]
        append_turn_events(engine, "alice", f"turn-{turn}", events)
    engine.dispose()


async def open_stream(
    port: int, path: str, source: str = "127.0.0.1"
) -> tuple[int, asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
    writer.write(f"{request}\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 60)
    status = int(status_line.split()[1])
    return status, reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> None:
    buffer = b""
    while marker not in buffer:
        chunk = await reader.read(1 << 16)
        assert chunk, "the stream ended"
        buffer = buffer[-len(marker) :] + chunk


async def health_time(base: str) -> float:
    async with httpx.AsyncClient(timeout=30) as http:
        started = time.monotonic()
        response = await http.get(f"{base}/health")
        took = time.monotonic() - started
    assert response.status_code == 200, response.text
    return took


async def flood(hive: RunningC0re, path: str, first_event: bytes) -> None:
    pid = hive.process.proc.pid
    port = hive.env.dashboard_port
    before = rss(pid)
    # One greedy client (100 from 127.0.0.1) gets its share only; then 400 more from nine
    # other addresses get the rest, up to the total.
    greedy = await asyncio.gather(*(open_stream(port, path) for _ in range(100)))
    others = [f"127.0.0.{2 + n % 9}" for n in range(CLIENTS - 100)]
    opened = greedy + await asyncio.gather(*(open_stream(port, path, ip) for ip in others))
    try:
        served = [(reader, writer) for status, reader, writer in opened if status == 200]
        refused = [reader for status, reader, _ in opened if status == 503]
        assert len(served) + len(refused) == CLIENTS, sorted({s for s, _, _ in opened})
        assert sum(status == 200 for status, _, _ in greedy) == 12
        assert len(served) == 32, len(served)
        # The whole refusal: its JSON body ends the answer (a read may return less).
        said = await asyncio.gather(*(reader.readuntil(b"}") for reader in refused))
        assert all(b"too_many_streams" in body for body in said)
        assert b"HIVE_MAX_LIVE_STREAMS_PER_CLIENT" in said[0], said[0]
        assert b"raise HIVE_MAX_LIVE_STREAMS)" in said[-1], said[-1]
        # Every served stream has been sent the big part (the rows, the replayed events).
        await asyncio.wait_for(
            asyncio.gather(*(read_until(reader, first_event) for reader, _ in served)), 120
        )
        for _ in range(3):
            assert await health_time(hive.env.dashboard) < 1.0
        grown = rss(pid) - before
        assert grown < MAX_GROWTH_OPEN, f"{grown >> 20} MiB with {len(served)} streams open"
    finally:
        for _, _, writer in opened:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    assert await health_time(hive.env.dashboard) < 1.0
    # A fresh stream is served again once the others are gone.
    status, _, writer = await open_stream(port, path)
    writer.close()
    assert status == 200
    kept = rss(pid) - before
    print(f"{path}: {before >> 20} MiB before, +{grown >> 20} MiB open, +{kept >> 20} MiB after")
    assert kept < MAX_GROWTH_AFTER, f"{kept >> 20} MiB kept after the streams closed"


async def test_500_dashboard_streams_are_bounded(start_c0re: StartC0re) -> None:
    hive = await start_c0re(["alice"])
    fill(hive)
    await flood(hive, "/api/stream/messages", b"event: approvals")


async def test_500_agent_page_streams_are_bounded(start_c0re: StartC0re) -> None:
    hive = await start_c0re(["alice"])
    fill(hive)
    await flood(hive, "/agents/alice/api/events", b"4-99 ")


async def test_a_wild_last_event_id_starts_the_stream_afresh(start_c0re: StartC0re) -> None:
    # Before: `Last-Event-ID: 99999999999999999999` (past SQLite's 64-bit ids) killed the stream.
    hive = await start_c0re(["alice"])
    await hive.send("alice", "seen before the reconnect")
    async with httpx.AsyncClient(base_url=hive.env.dashboard, timeout=30) as http:
        for resume in ("99999999999999999999", "-1", "1e9", "12abc", "7 x"):
            for path, first in (
                ("/api/stream/messages", "seen before the reconnect"),
                ("/agents/alice/api/events", "event: status"),
            ):
                headers = {"last-event-id": resume}
                async with http.stream("GET", path, headers=headers) as response:
                    assert response.status_code == 200, (resume, path)
                    async with asyncio.timeout(30):
                        async for chunk in response.aiter_text():
                            if first in chunk:
                                break
        assert await health_time(hive.env.dashboard) < 1.0
