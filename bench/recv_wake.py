"""recv long-poll wake latency: from the start of a `send` call to the waiting `recv` returning.

    .venv/bin/python -m bench.recv_wake [SAMPLES]

A Broker on a real store (SQLite WAL in a temp dir) and the real in-process bus, as in
hive-c0re. For each sample a task long-polls `recv("bob", wait_seconds=30)`; once it is parked on
the bus (subscribed, inbox looked at, waiting), the operator sends bob a message and the time
from the start of the `send` call to `recv` returning the message is recorded.

Baseline in the same run: the bus alone (publish → a parked subscriber wakes), i.e. what the
store's write (send) and atomic pop (recv) add on top of the wake-up itself.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.common import PYTHON, Row, latency_summary, load_average, percentile, print_rows
from hyperhive.broker import Broker
from hyperhive.bus import EventBus, Subscription
from hyperhive.domain import OPERATOR_NAME
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store.db import make_engine, migrate

TARGET_P50_S = 0.005


class _ParkedSubscription:
    """A subscription that says when its reader starts waiting (the recv is parked)."""

    def __init__(self, inner: Subscription, parked: asyncio.Event) -> None:
        self._inner = inner
        self._parked = parked

    async def wait(self, timeout: float | None) -> bool:
        self._parked.set()
        return await self._inner.wait(timeout)

    def __enter__(self) -> _ParkedSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ObservedBus(EventBus):
    """The real EventBus; `parked` is set when a subscriber of `inbox:*` starts waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = asyncio.Event()

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> Any:
        inner = super().subscribe(topic, maxsize=maxsize)
        if topic.startswith("inbox:"):
            return _ParkedSubscription(inner, self.parked)
        return inner


async def measure_broker(samples: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = HiveSettings(state_dir=Path(tmp), send_rate_per_minute=10**9)
        engine = make_engine(settings.database_url)
        migrate(engine)
        agent_store.register_agent(engine, "bob", "local")

        async def waker(agent: str) -> None:
            return None

        bus = ObservedBus()
        broker = Broker(engine, bus, waker, settings)
        latencies: list[float] = []

        async def receive() -> float:
            message = await broker.recv("bob", wait_seconds=30)
            done = time.perf_counter()
            if message is None:
                raise RuntimeError("recv timed out: the send did not wake it")
            return done

        try:
            for i in range(samples):
                bus.parked.clear()
                receiver = asyncio.create_task(receive())
                await asyncio.wait_for(bus.parked.wait(), 10)
                started = time.perf_counter()
                await broker.send(OPERATOR_NAME, "bob", f"wake {i}")
                latencies.append(await receiver - started)
        finally:
            await broker.aclose()
            engine.dispose()
        return latencies


async def measure_bus(samples: int) -> list[float]:
    bus = EventBus()
    latencies: list[float] = []
    for i in range(samples):
        parked = asyncio.Event()
        with bus.subscribe("inbox:bob", maxsize=1) as inbox:

            async def receive(inbox: Subscription = inbox, parked: asyncio.Event = parked) -> float:
                parked.set()
                if not await inbox.wait(30):
                    raise RuntimeError("the bus did not wake the subscriber")
                return time.perf_counter()

            receiver = asyncio.create_task(receive())
            await parked.wait()
            await asyncio.sleep(0)  # let the receiver reach its wait
            started = time.perf_counter()
            bus.publish("inbox:bob", {"id": i})
            latencies.append(await receiver - started)
    return latencies


async def run(samples: int = 1000) -> list[Row]:
    load = load_average()
    latencies = await measure_broker(samples)
    baseline = await measure_bus(samples)
    p50, base_p50 = percentile(latencies, 50), percentile(baseline, 50)
    command = f"{PYTHON} -m bench.recv_wake {samples}"
    return [
        Row(
            "recv long-poll wake: `send` call start → waiting `recv` returns the message "
            "(real store + bus, in process)",
            command,
            f"{latency_summary(latencies)}; {load}",
            "p50 ≤ 5 ms",
            p50 <= TARGET_P50_S,
        ),
        Row(
            "recv wake baseline: bus publish → parked subscriber wakes (no store)",
            command,
            f"{latency_summary(baseline)}; the store's write + pop make the wake "
            f"{p50 / base_p50:.0f}× the bare bus wake",
            "—",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="?", type=int, default=1000)
    args = parser.parse_args()
    print_rows(asyncio.run(run(args.samples)))


if __name__ == "__main__":
    main()
