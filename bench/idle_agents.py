"""Memory and idle CPU of hive-c0re with many registered idle agents.

    .venv/bin/python -m bench.idle_agents [AGENTS] [--window SECONDS]

AGENTS agents are registered in a fresh store before a real `hive up` (embedded Temporal, process
backend, free ports, a wide agent-page port range); each gets its directories and MCP socket at
start-up. Two states are measured:

1. just started: every agent registered, none has had a turn yet (no AgentWorkflows);
2. after one turn each: the operator sends every agent one message, each runs a turn (the fake
   claude of bench/common.py, which exits at once) and goes idle, so every agent has a live
   AgentWorkflow waiting for mail — the steady state of a hive whose agents have all worked.

For each: RSS (VmRSS from /proc/<pid>/status) of hive-c0re — the `hive up` process, which runs
hive-c0re in-process — and, separately, of the embedded Temporal server (its child), and their
CPU use over WINDOW seconds of idleness (utime + stime from /proc/<pid>/stat; % of one core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.common import (
    PYTHON,
    Row,
    hive_up_env,
    load_average,
    print_rows,
    read_starts,
    token_body,
    wait_idle,
    write_fake_claude,
)
from tests.rig.hive_process import HiveProcess

TARGET_RSS_MB = 250
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE_S = 5.0


def status_field(pid: int, name: str) -> int:
    """A `kB` field of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def temporal_pid(hive_pid: int) -> int:
    for pid in children(hive_pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(b"temporal" in part for part in cmdline[:1]) and b"start-dev" in cmdline:
            return pid
    raise RuntimeError("the embedded Temporal server is not a child of `hive up`")


@dataclass
class Sample:
    c0re_rss: int
    c0re_hwm: int
    temporal_rss: int
    c0re_cpu_pct: float
    temporal_cpu_pct: float
    threads: int
    fds: int


def measure(hive_pid: int, server_pid: int, window_s: float) -> Sample:
    c0re_cpu, server_cpu, started = cpu_seconds(hive_pid), cpu_seconds(server_pid), time.time()
    time.sleep(window_s)
    elapsed = time.time() - started
    return Sample(
        c0re_rss=status_field(hive_pid, "VmRSS"),
        c0re_hwm=status_field(hive_pid, "VmHWM"),
        temporal_rss=status_field(server_pid, "VmRSS"),
        c0re_cpu_pct=100 * (cpu_seconds(hive_pid) - c0re_cpu) / elapsed,
        temporal_cpu_pct=100 * (cpu_seconds(server_pid) - server_cpu) / elapsed,
        threads=threads(hive_pid),
        fds=open_fds(hive_pid),
    )


@dataclass
class Figures:
    ready_s: float
    fresh: Sample
    worked: Sample
    turns_started_s: float
    turns_idle_s: float


async def one_turn_each(
    env_dashboard: str, target: str, agents: list[str], log: Path
) -> tuple[float, float]:
    """Send every agent one message; (seconds until every turn started, until all idle)."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=env_dashboard, timeout=60) as http:
        headers = {"X-Hive-CSRF": (await http.get("/api/csrf")).json()["token"]}
        for i, agent in enumerate(agents):
            response = await http.post(
                "/api/messages", json={"to": agent, "body": token_body(i)}, headers=headers
            )
            if response.status_code != 201:
                raise RuntimeError(f"send failed: {response.status_code} {response.text}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 300
    while len(read_starts(log)) < len(agents):
        if loop.time() > deadline:
            raise TimeoutError(f"only {len(read_starts(log))} of {len(agents)} turns started")
        await asyncio.sleep(0.1)
    all_started = time.perf_counter() - started
    client = await Client.connect(target, data_converter=pydantic_data_converter)
    for agent in agents:
        await wait_idle(client, agent, 1, timeout=120)
    return all_started, time.perf_counter() - started


async def measure_hive(base: Path, count: int, window_s: float) -> Figures:
    agents = [f"i{i:03d}" for i in range(count)]
    log = base / "starts.log"
    claude = write_fake_claude(base, log)
    env = hive_up_env(base, agents, claude)
    started = time.perf_counter()
    hive = HiveProcess(env, "up")
    try:
        hive.wait_ready(300)
        ready_s = time.perf_counter() - started
        server = temporal_pid(hive.proc.pid)
        await asyncio.sleep(SETTLE_S)
        fresh = await asyncio.to_thread(measure, hive.proc.pid, server, window_s)
        turns = await one_turn_each(env.dashboard, env.temporal_target, agents, log)
        await asyncio.sleep(SETTLE_S)
        worked = await asyncio.to_thread(measure, hive.proc.pid, server, window_s)
        return Figures(ready_s, fresh, worked, *turns)
    except BaseException:
        print(f"--- hive up output ---\n{hive.output()[-4000:]}")
        raise
    finally:
        if hive.proc.poll() is None:
            hive.interrupt()


def mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


async def run(count: int = 200, window_s: float = 30.0) -> list[Row]:
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="hb-", dir="/tmp") as tmp:
        f = await measure_hive(Path(tmp), count, window_s)
    command = f"{PYTHON} -m bench.idle_agents {count}"
    if window_s != 30.0:
        command += f" --window {window_s:g}"
    worst = max(f.fresh.c0re_rss, f.worked.c0re_rss)

    def describe(s: Sample) -> str:
        return (
            f"hive-c0re RSS {mb(s.c0re_rss)} (peak {mb(s.c0re_hwm)}), idle CPU "
            f"{s.c0re_cpu_pct:.1f}% of a core; embedded Temporal RSS {mb(s.temporal_rss)}, "
            f"idle CPU {s.temporal_cpu_pct:.1f}%; {s.threads} threads, {s.fds} fds"
        )

    return [
        Row(
            f"memory and idle CPU of hive-c0re with {count} registered idle agents (`hive up`, "
            "process backend), just started",
            command,
            f"{describe(f.fresh)}; ready in {f.ready_s:.1f} s; {load}",
            f"≤ {TARGET_RSS_MB} MB",
            f.fresh.c0re_rss <= TARGET_RSS_MB * 1e6,
        ),
        Row(
            f"the same {count} agents after one turn each (every AgentWorkflow live and idle)",
            command,
            f"{describe(f.worked)}; CPU over {window_s:g} s. Sending all {count} at once: every "
            f"claude started within {f.turns_started_s:.1f} s, all idle again after "
            f"{f.turns_idle_s:.1f} s",
            f"≤ {TARGET_RSS_MB} MB",
            worst <= TARGET_RSS_MB * 1e6,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agents", nargs="?", type=int, default=200)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    print_rows(asyncio.run(run(args.agents, args.window)))


if __name__ == "__main__":
    main()
