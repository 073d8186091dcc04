"""Memory and idle CPU of the warm claudes of bench/warm_agents.py, read from /proc.

Each warm claude is a bwrap child of the `hive up` process; its whole process tree (bwrap,
claude, its MCP bridge, the model port forwarder) is measured, split by what each process is."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from activities.warm_claude import rss_bytes, tree_rss_bytes
from bench.idle_agents import children
from bench.warm_rig import Operator
from tests.rig.c0re import RunningC0re

CLK_TCK = os.sysconf("SC_CLK_TCK")
# The first seconds after a turn still carry claude's own end-of-turn work: idle starts later.
IDLE_SETTLE_S = 2.0


@dataclass
class Memory:
    rss: list[int]  # per warm claude's process tree
    pss: list[int]
    rss_by_role: dict[str, float]  # all trees: claude, bwrap, hive-agent mcp/run …
    processes: int  # in all trees
    metric_rss: float  # hive_warm_rss_bytes
    metric_warm: float  # hive_warm_agents
    cpu_by_role: dict[str, float]  # seconds over window_s, all trees
    wakeups_by_role: dict[str, float]  # context switches (all threads) over window_s
    window_s: float

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_role.values())


def tree(root: int) -> list[int]:
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack += children(pid)
    return pids


def sandboxes(hive: RunningC0re) -> list[int]:
    """The bwrap processes hive-c0re runs (it runs inside the `hive up` process): each is one
    agent's claude with its sandbox, warm when the agent is idle."""
    found = []
    for pid in children(hive.process.proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap":
                found.append(pid)
        except OSError:
            continue
    return found


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def context_switches(pid: int) -> float:
    """Voluntary and involuntary context switches of all the process's threads: how often an
    idle process wakes up."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)
    return float(total)


def role(pid: int) -> str:
    """What a process of a warm agent's tree is: claude, bwrap, or which `hive-agent` (both
    are the sandbox's Python: `run` forwards the model port, `mcp` is the MCP bridge)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "gone"
    for command in ("run", "mcp"):
        if comm.startswith("python") and command.encode() in argv:
            return f"hive-agent {command}"
    return comm


def by_role(pids: Sequence[int], value: Callable[[int], float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid in pids:
        name = role(pid)
        totals[name] = totals.get(name, 0.0) + value(pid)
    return totals


async def measure_memory(hive: RunningC0re, op: Operator, window_s: float) -> Memory:
    """The sandboxes' trees and `/metrics` now; their CPU and wake-ups over `window_s` idle
    seconds from IDLE_SETTLE_S on; their RSS and PSS at the end."""
    roots = sandboxes(hive)
    trees = [tree(root) for root in roots]
    pids = [pid for pids in trees for pid in pids]
    metrics = await op.metrics()
    await asyncio.sleep(IDLE_SETTLE_S)
    before = by_role(pids, cpu_seconds), by_role(pids, context_switches)
    await asyncio.sleep(window_s)
    after = by_role(pids, cpu_seconds), by_role(pids, context_switches)
    return Memory(
        rss=[tree_rss_bytes(root) for root in roots],
        pss=[sum(pss_bytes(pid) for pid in pids) for pids in trees],
        rss_by_role=by_role(pids, lambda pid: float(rss_bytes(pid))),
        processes=len(pids),
        metric_rss=metrics.get("hive_warm_rss_bytes", -1.0),
        metric_warm=metrics.get("hive_warm_agents", -1.0),
        cpu_by_role={k: v - before[0].get(k, 0.0) for k, v in after[0].items()},
        wakeups_by_role={k: v - before[1].get(k, 0.0) for k, v in after[1].items()},
        window_s=window_s,
    )
