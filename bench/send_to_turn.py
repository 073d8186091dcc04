"""send → the message reaches the recipient's claude, through the real `hive up`.

    .venv/bin/python -m bench.send_to_turn [SENDS] [--agents K]

`hive up` with the embedded Temporal, the process backend, a fresh state dir and free ports;
K agents are registered in the store before start-up. HIVE_CLAUDE_BIN is a small bash script
(bench/common.py: FAKE_CLAUDE) that, for each prompt line it reads from stdin, reads the clock
(EPOCHREALTIME, no fork), appends "<time> <token of the message>" to a log and prints what
claude prints for a trivial successful turn, living on between turns as a warm claude does. So
the time recorded is the prompt reaching claude (on the first turn, a bash start-up later), not
claude's Node start-up or a model call: bench/warm_agents.py measures those with the real CLI.

The operator sends each message with `POST /api/messages` (CSRF header, a kept-alive HTTP
connection, as the dashboard does), one at a time: the next send goes out only once the
previous turn is over and the agent's workflow is idle again (its `status` query), so every
sample is "a message reaches an idle agent". The first message to each agent (which starts its
workflow) is a warm-up, reported separately.

Baseline in the same run: the broker's store + bus path alone, no Temporal — an in-process
Broker on its own SQLite store whose waker runs the very same `run_turn` activity code directly
(temporalio's ActivityEnvironment, no server) with the same backend and fake claude.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from activities.backends.process import ProcessBackend
from activities.turns import TurnActivities
from bench.common import (
    PYTHON,
    Row,
    hive_command,
    hive_up_env,
    latency_summary,
    load_average,
    ms,
    percentile,
    print_rows,
    read_starts,
    token_body,
    wait_idle,
    write_fake_claude,
)
from hyperhive.broker import Broker
from hyperhive.bus import EventBus
from hyperhive.domain import OPERATOR_NAME
from hyperhive.models import TurnRequest
from hyperhive.settings import HiveSettings
from hyperhive.store.db import make_engine, migrate
from tests.rig.c0re import register_spawned
from tests.rig.hive_process import HiveProcess

TARGET_P50_S = 0.060
TARGET_P99_S = 0.250
SETTLE_S = 0.02


@dataclass
class Figures:
    latencies: list[float]
    post_s: list[float]
    warmups: list[float]


async def wait_start(log: Path, token: int, timeout: float = 30) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        started = read_starts(log).get(token)
        if started is not None:
            return started
        await asyncio.sleep(0.002)
    raise TimeoutError(f"message {token} never reached claude within {timeout} s")


def agent_names(count: int) -> list[str]:
    return [f"b{i}" for i in range(count)]


async def measure_hive(
    base: Path, sends: int, agents: list[str], temporal_pragmas: Sequence[str] = ()
) -> Figures:
    log = base / "starts.log"
    claude = write_fake_claude(base, log)
    env = hive_up_env(base, agents, claude)
    with hive_command(base, temporal_pragmas):
        hive = HiveProcess(env, "up")
    try:
        hive.wait_ready(120)
        client = await Client.connect(env.temporal_target, data_converter=pydantic_data_converter)
        turns = dict.fromkeys(agents, 0)
        figures = Figures([], [], [])
        async with httpx.AsyncClient(base_url=env.dashboard, timeout=30) as http:
            token = (await http.get("/api/csrf")).json()["token"]
            headers = {"X-Hive-CSRF": token}
            total = len(agents) + sends
            for i in range(total):
                agent = agents[i % len(agents)]
                if turns[agent]:
                    await wait_idle(client, agent, turns[agent])
                    await asyncio.sleep(SETTLE_S)
                sent = time.time()
                response = await http.post(
                    "/api/messages", json={"to": agent, "body": token_body(i)}, headers=headers
                )
                posted = time.time()
                if response.status_code != 201:
                    raise RuntimeError(f"send failed: {response.status_code} {response.text}")
                started = await wait_start(log, i)
                turns[agent] += 1
                if i < len(agents):
                    figures.warmups.append(started - sent)
                else:
                    figures.latencies.append(started - sent)
                    figures.post_s.append(posted - sent)
        return figures
    except BaseException:
        print(f"--- hive up output ---\n{hive.output()[-4000:]}")
        raise
    finally:
        if hive.proc.poll() is None:
            hive.interrupt()


async def measure_baseline(base: Path, sends: int, agents: list[str]) -> list[float]:
    """The same sends through an in-process Broker whose waker runs `run_turn` directly."""
    log = base / "starts.log"
    claude = write_fake_claude(base, log)
    settings = HiveSettings(
        state_dir=base / "state",
        run_dir=base / "run",
        claude_bin=str(claude),
        container_backend="process",
        send_rate_per_minute=10**6,
    )
    settings.state_path.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)
    for name in agents:
        register_spawned(settings.state_path, engine, name, "local")
    bus = EventBus()
    turns = TurnActivities(settings, engine, bus, ProcessBackend(settings))
    sessions = {name: str(uuid.uuid4()) for name in agents}
    running: set[asyncio.Task[object]] = set()

    async def waker(agent: str) -> None:
        # What the AgentWorkflow does on `notify`, minus Temporal: run the turn activity.
        request = TurnRequest(agent=agent, turn_id=str(uuid.uuid4()), session_id=sessions[agent])
        task = asyncio.ensure_future(ActivityEnvironment().run(turns.run_turn, request))
        running.add(task)
        task.add_done_callback(running.discard)

    broker = Broker(engine, bus, waker, settings)
    latencies: list[float] = []
    try:
        for i in range(len(agents) + sends):
            agent = agents[i % len(agents)]
            if running:
                await asyncio.gather(*running)
                await asyncio.sleep(SETTLE_S)
            sent = time.time()
            await broker.send(OPERATOR_NAME, agent, token_body(i))
            started = await wait_start(log, i)
            if i >= len(agents):
                latencies.append(started - sent)
        if running:
            await asyncio.gather(*running)
    finally:
        await broker.aclose()
        engine.dispose()
    return latencies


async def run(
    sends: int = 100, agent_count: int = 2, temporal_pragmas: Sequence[str] = ()
) -> list[Row]:
    agents = agent_names(agent_count)
    load = load_average()
    # Unix socket paths are short (107 bytes): keep the temp dirs near the root.
    with tempfile.TemporaryDirectory(prefix="hb-", dir="/tmp") as tmp:
        hive = await measure_hive(Path(tmp) / "hive", sends, agents, temporal_pragmas)
        baseline = await measure_baseline(Path(tmp) / "base", sends, agents)
    p50, p99 = percentile(hive.latencies, 50), percentile(hive.latencies, 99)
    base_p50, base_p99 = percentile(baseline, 50), percentile(baseline, 99)
    command = f"{PYTHON} -m bench.send_to_turn {sends}"
    if agent_count != 2:
        command += f" --agents {agent_count}"
    variant = ""
    for pragma in temporal_pragmas:
        command += f" --temporal-sqlite-pragma {pragma}"
        variant += f", Temporal's SQLite with {pragma}"
    return [
        Row(
            "send → the message on the recipient's claude's stdin: operator "
            "`POST /api/messages` to an "
            f"idle agent, real `hive up` (embedded Temporal{variant}, process backend, "
            f"{agent_count} agents)",
            command,
            f"{latency_summary(hive.latencies)}; of which the POST itself (store, bus, "
            f"signal-with-start) p50 {ms(percentile(hive.post_s, 50))}; first send to each "
            f"agent (starts its workflow) {', '.join(ms(w) for w in hive.warmups)}; {load}",
            "p50 ≤ 60 ms, p99 ≤ 250 ms",
            p50 <= TARGET_P50_S and p99 <= TARGET_P99_S,
        ),
        Row(
            "send → turn baseline: in-process Broker (store + bus) whose waker runs the same "
            "`run_turn` activity directly, no Temporal",
            command,
            f"{latency_summary(baseline)}; hive up / baseline: p50 {p50 / base_p50:.1f}×, "
            f"p99 {p99 / base_p99:.1f}×",
            "—",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sends", nargs="?", type=int, default=100)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument(
        "--temporal-sqlite-pragma",
        action="append",
        default=[],
        metavar="PRAGMA=VALUE",
        help="also pass `--sqlite-pragma PRAGMA=VALUE` to the embedded Temporal (an A/B switch, "
        "e.g. journal_mode=wal); repeatable",
    )
    args = parser.parse_args()
    print_rows(asyncio.run(run(args.sends, args.agents, args.temporal_sqlite_pragma)))


if __name__ == "__main__":
    main()
