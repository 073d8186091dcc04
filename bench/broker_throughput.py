"""Broker throughput: messages stored + published + (coalesced) wake-ups per second.

    .venv/bin/python -m bench.broker_throughput [COUNT]

Real store (SQLite WAL in a temp dir) and real bus; the waker only counts (Temporal is measured
elsewhere: with coalescing a burst costs one signal, not one per message).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from hyperhive.broker import Broker
from hyperhive.bus import EventBus
from hyperhive.domain import OPERATOR_NAME
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store.db import make_engine, migrate


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = HiveSettings(state_dir=Path(tmp), send_rate_per_minute=10**9)
        engine = make_engine(settings.database_url)
        migrate(engine)
        for name in ("alice", "bob"):
            agent_store.register_agent(engine, name, "local")
        wakes: list[str] = []

        async def waker(agent: str) -> None:
            wakes.append(agent)

        broker = Broker(engine, EventBus(), waker, settings)
        started = time.perf_counter()
        for i in range(count):
            await broker.send("alice" if i % 2 else OPERATOR_NAME, "bob", f"message {i}")
        elapsed = time.perf_counter() - started
        await broker.aclose()
        engine.dispose()
    print(f"{count} sends in {elapsed:.2f} s: {count / elapsed:.0f} msg/s, {len(wakes)} wake-up(s)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
