"""Dashboard update latency: from the start of a send (`POST /api/messages`) to the message
showing on every open dashboard tab (its `message` event on each SSE stream).

    .venv/bin/python -m bench.dashboard_update [SAMPLES]

The real `hive up` (embedded Temporal, process backend, a fake claude that answers at once).
Baseline in the same run: one open tab and no pending approvals. Then the case issue 13 was
about: 32 open tabs (the most HIVE_MAX_LIVE_STREAMS allows; all from 127.0.0.1 here, so the
per-client limit is raised to match) while 20 approvals with 128 KiB
diffs each wait — the rows every stream sends are rendered once for all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import (
    PYTHON,
    Row,
    hive_up_env,
    latency_summary,
    load_average,
    percentile,
    print_rows,
    write_fake_claude,
)
from hyperhive.models import NewApproval
from hyperhive.store import approvals as approval_store
from hyperhive.store.db import make_engine
from tests.rig.hive_process import HiveEnv, HiveProcess

TABS = 32
TARGET_P50_S = 0.25
DIFF_BYTES = 128 * 1024


def pend_approvals(env: HiveEnv, count: int) -> None:
    engine = make_engine(f"sqlite:///{env.state_dir / 'hive.db'}")
    try:
        for i in range(count):
            diff = "".join(f"+line {i}-{n} {'x' * 60}\n" for n in range(DIFF_BYTES // 70))
            approval_store.create_approval(
                engine,
                NewApproval(
                    kind="apply_commit",
                    agent="alice",
                    requester="hm1nd",
                    description=f"change {i}",
                    workflow_id=f"bench-{i}",
                    diff=diff,
                ),
            )
    finally:
        engine.dispose()


class Tab:
    """One open dashboard: its stream, and when each watched body arrived on it."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self.seen: dict[str, float] = {}
        self.ready = asyncio.Event()
        self._new = asyncio.Event()

    async def follow(self) -> None:
        async with self._http.stream("GET", "/api/stream/messages") as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("event: approvals") or line.startswith("event: agents"):
                    self.ready.set()
                if line.startswith("data:") and '"body":"bench ' in line:
                    body = line.split('"body":"', 1)[1].split('"', 1)[0]
                    self.seen.setdefault(body, time.perf_counter())
                    self._new.set()

    async def arrived(self, body: str) -> float:
        while body not in self.seen:
            self._new.clear()
            await self._new.wait()
        return self.seen[body]


async def measure(env: HiveEnv, tabs: int, samples: int) -> list[float]:
    limits = httpx.Limits(max_connections=tabs + 4)
    async with httpx.AsyncClient(base_url=env.dashboard, timeout=60, limits=limits) as http:
        csrf = {"X-Hive-CSRF": (await http.get("/api/csrf")).json()["token"]}
        open_tabs = [Tab(http) for _ in range(tabs)]
        following = [asyncio.create_task(tab.follow()) for tab in open_tabs]
        try:
            await asyncio.wait_for(asyncio.gather(*(t.ready.wait() for t in open_tabs)), 120)
            latencies = []
            for i in range(samples):
                body = f"bench {tabs}-{i}"
                started = time.perf_counter()
                sent = await http.post(
                    "/api/messages", json={"to": "alice", "body": body}, headers=csrf
                )
                sent.raise_for_status()
                arrivals = await asyncio.wait_for(
                    asyncio.gather(*(tab.arrived(body) for tab in open_tabs)), 60
                )
                latencies.append(max(arrivals) - started)
            return latencies
        finally:
            for task in following:
                task.cancel()
            await asyncio.gather(*following, return_exceptions=True)


async def run(samples: int = 30) -> list[Row]:
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="hb-", dir="/tmp") as tmp:
        base = Path(tmp)
        claude = write_fake_claude(base, base / "starts.log")
        env = hive_up_env(base, ["alice"], claude)
        # All tabs come from 127.0.0.1 here: one address may hold them all.
        env.extra["HIVE_MAX_LIVE_STREAMS_PER_CLIENT"] = str(TABS)
        hive = HiveProcess(env, "up")
        try:
            hive.wait_ready(300)
            baseline = await measure(env, 1, samples)
            pend_approvals(env, 20)
            loaded = await measure(env, TABS, samples)
        except BaseException:
            print(f"--- hive up output ---\n{hive.output()[-4000:]}")
            raise
        finally:
            if hive.proc.poll() is None:
                hive.interrupt()
    command = f"{PYTHON} -m bench.dashboard_update {samples}"
    return [
        Row(
            f"dashboard update: send (`POST /api/messages`) → the message on all {TABS} open "
            "dashboard tabs, with 20 pending approvals of 128 KiB diffs (`hive up`)",
            command,
            f"{latency_summary(loaded)}; {load}",
            f"p50 ≤ {TARGET_P50_S * 1000:.0f} ms",
            percentile(loaded, 50) <= TARGET_P50_S,
        ),
        Row(
            "baseline, same run: one open tab, no pending approvals",
            command,
            latency_summary(baseline),
            "—",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="?", type=int, default=30)
    args = parser.parse_args()
    print_rows(asyncio.run(run(args.samples)))


if __name__ == "__main__":
    main()
