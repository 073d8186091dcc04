"""Warm agents: send → the agent's model request, a 10-hop exchange, and what warm claudes cost.

    .venv/bin/python -m bench.warm_agents [SAMPLES] [--cold-samples N] [--agents N] [--hops N]

Two real `hive up`s, one after the other (embedded Temporal, the bwrap backend, the pinned
claude CLI, a fresh state dir, free ports), both against one local fake model API
(tests/fakes/anthropic_api.py) that answers every request at once:

- warm: the default settings (`HIVE_WARM_AGENTS=8`): an agent's claude stays alive between its
  turns and reads the next wake prompt on its stdin;
- cold, the baseline in the same run: `HIVE_WARM_AGENTS=0`, every turn starts claude (in its
  sandbox, with its MCP bridge) and resumes the session, as before warm agents.

Each hive spawns its agents through an approval (`hive spawn`, `hive approve`) and gives each one
turn first (it creates the session; in the warm hive it leaves the claude warm). Then:

1. send → model request: the operator sends (`POST /api/messages`, CSRF header, a kept-alive
   connection) a message to an idle agent (alternately the first two), timed until the fake model
   receives the turn's first request (the one whose prompt carries the message). Each sample's
   turn is checked warm or cold by the "hive" event it stored (`warm`). For the warm samples the
   time is also split along the path: the POST returned (store, bus, `notify` signal), Temporal
   recorded the signal, scheduled `run_turn`, the worker started it (workflow history), the turn
   wrote the prompt to claude's stdin (its "hive" event is stored right after), the model request.
2. a 10-hop exchange: the operator sends "hop 0" to the first agent; every turn sends the next
   hop to the other agent with `mcp__hive__send`, and the turn that receives hop 10 tells the
   operator. Wall time from the operator's send to the operator holding that answer (11 turns,
   10 agent-to-agent messages); also the model's first request of hop 0 → that of hop 10.
3. memory and idle CPU (warm hive, all AGENTS agents warm and idle): each warm claude is a
   bwrap child of the `hive up` process; RSS (VmRSS) and PSS (smaps_rollup: shared pages split
   between their users, so PSS adds up) of each one's whole process tree (bwrap, claude, its
   MCP bridge, the model port forwarder), their total, and `hive_warm_rss_bytes` from /metrics;
   their CPU (utime + stime of every process in the trees) and wake-ups (context switches of
   all their threads) over 10 idle seconds, starting 2 s after the last turn.

Also, as the floor of a warm turn's start: the same claude run bare (no hive, sandbox, MCP
bridge or model proxy) with `--input-format stream-json`, timed from each user message's stdin
write to the model's first request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    PYTHON,
    Row,
    latency_summary,
    load_average,
    ms,
    percentile,
    print_rows,
    wait_idle,
)
from bench.warm_probes import Memory, measure_memory, sandboxes
from bench.warm_rig import (
    AGENT_NAMES,
    Operator,
    behaviour,
    first_request_of,
    spawn_and_warm_up,
    start_hive,
    turns_total,
)
from bench.warm_timing import Sample, bare_stdin_to_model, stage_medians, stages_of, turn_flags
from tests.fakes.anthropic_api import FakeAnthropic
from tests.rig.agent_scripts import hive_responder
from tests.rig.c0re import RunningC0re

TARGET_P50_S = 0.100
TARGET_P99_S = 0.300
TARGET_IDLE_CPU = 0.01  # of one core, per idle warm agent
IDLE_WINDOW_S = 10.0  # after IDLE_SETTLE_S (bench/warm_probes.py)
# After an agent's workflow reports idle, let its turn's last writes land before the next send.
SETTLE_S = 0.02


# ---------------------------------------------------------------------------------------------
# one hive: the measurements


@dataclass
class Exchange:
    wall_s: float  # operator's send of hop 0 → the operator holds the last turn's answer
    hops_s: float  # the model's first request of hop 0 → that of the last hop


@dataclass
class HiveRun:
    samples: list[Sample]
    warm: list[bool | None]  # per sample: the turn's "hive" event said warm (None: not found)
    stages: list[dict[str, float]]  # per sample: stage → seconds since the send
    exchange: Exchange
    memory: Memory | None
    idle_trees: int  # sandboxes alive while every agent is idle
    turn_starts: dict[str, float] = field(default_factory=dict)


async def latency_samples(
    hive: RunningC0re,
    op: Operator,
    fake: FakeAnthropic,
    agents: Sequence[str],
    count: int,
    label: str,
) -> list[Sample]:
    """`count` sends, each to an idle agent (alternately), timed to the model's first request."""
    turns = {agent: await turns_total(hive, agent) for agent in agents}
    samples: list[Sample] = []
    for i in range(count):
        agent = agents[i % len(agents)]
        await wait_idle(hive.client, agent, turns[agent])
        await asyncio.sleep(SETTLE_S)
        body = f"ping {label}-{i}"
        sent, posted, message_id = await op.send(agent, body)
        request = await fake.wait_for_async(first_request_of(body), timeout=120)
        turns[agent] += 1
        samples.append(Sample(agent, sent, posted, message_id, request.received_at))
    for agent in agents:
        await wait_idle(hive.client, agent, turns[agent], timeout=120)
    return samples


async def hop_exchange(
    hive: RunningC0re, op: Operator, fake: FakeAnthropic, hops: int, label: str
) -> Exchange:
    first = AGENT_NAMES[0]
    turns = {agent: await turns_total(hive, agent) for agent in AGENT_NAMES[:2]}
    sent, _, _ = await op.send(first, f"hop 0 of {hops} [{label}]")
    await hive.notice(f"hops done [{label}]", timeout=300)
    done = time.time()
    start = await fake.wait_for_async(first_request_of(f"hop 0 of {hops} [{label}]"))
    end = await fake.wait_for_async(first_request_of(f"hop {hops} of {hops} [{label}]"))
    # Hop k is received by agent k % 2: the first gets hops 0, 2, …, the other 1, 3, …
    turns[first] += hops // 2 + 1
    turns[AGENT_NAMES[1]] += (hops + 1) // 2
    for agent, total in turns.items():
        await wait_idle(hive.client, agent, total, timeout=120)
    return Exchange(done - sent, end.received_at - start.received_at)


# ---------------------------------------------------------------------------------------------
# the two runs


@dataclass
class Plan:
    label: str
    warm_agents: int  # HIVE_WARM_AGENTS
    samples: int
    agents: int  # spawned; memory is measured over all of them (warm hive)
    hops: int


def progress(label: str, what: str, since: float) -> None:
    """On stderr, like run_all's own lines: the cold phases take a while."""
    print(f"   {label}: {what} in {time.perf_counter() - since:.0f} s", file=sys.stderr, flush=True)


async def measure(plan: Plan, fake: FakeAnthropic, base: Path) -> HiveRun:
    agents = AGENT_NAMES[: plan.agents]
    started = time.perf_counter()
    hive = await start_hive(base, fake, plan.warm_agents)
    try:
        async with httpx.AsyncClient(base_url=hive.env.dashboard, timeout=120) as http:
            op = Operator(http, await hive.csrf_headers(http))
            await spawn_and_warm_up(hive, op, agents, plan.label)
            progress(plan.label, f"up, {len(agents)} agents spawned and warmed up", started)
            started = time.perf_counter()
            samples = await latency_samples(hive, op, fake, agents[:2], plan.samples, plan.label)
            progress(plan.label, f"{plan.samples} samples", started)
            started = time.perf_counter()
            exchange = await hop_exchange(hive, op, fake, plan.hops, plan.label)
            progress(plan.label, f"{plan.hops}-hop exchange", started)
            await asyncio.sleep(0.5)  # let cold claudes of the last turns exit
            idle_trees = len(sandboxes(hive))
            memory = await measure_memory(hive, op, IDLE_WINDOW_S) if plan.warm_agents else None
            metrics = await op.metrics()
        flags = turn_flags(hive, agents[:2])
        return HiveRun(
            samples=samples,
            warm=[flags[s.message_id][1] if s.message_id in flags else None for s in samples],
            stages=await stages_of(hive, samples, flags),
            exchange=exchange,
            memory=memory,
            idle_trees=idle_trees,
            turn_starts={
                kind: metrics.get(f'hive_turn_starts_total{{kind="{kind}"}}', -1.0)
                for kind in ("warm", "cold")
            },
        )
    except BaseException:
        print(f"--- hive up output ({plan.label}) ---\n{hive.process.output()[-6000:]}")
        raise
    finally:
        if hive.process.proc.poll() is None:
            hive.process.interrupt()


# ---------------------------------------------------------------------------------------------
# rows


def mb(value: float) -> str:
    return f"{value / 1e6:.0f} MB"


def warm_count(run: HiveRun) -> str:
    warm = sum(1 for w in run.warm if w)
    return f"{warm} of {len(run.warm)} turns ran warm"


def latency_rows(
    warm: HiveRun, cold: HiveRun, bare: Sequence[float], command: str, load: str
) -> list[Row]:
    latencies = [s.latency for s in warm.samples]
    baseline = [s.latency for s in cold.samples]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return [
        Row(
            "warm agent: send → its model's first request: operator `POST /api/messages` to an "
            "idle agent whose claude is warm (real CLI in bwrap, `hive up`, a local API that "
            "answers at once)",
            command,
            f"{latency_summary(latencies)}; {warm_count(warm)} (`hive_turn_starts_total` "
            f"warm {warm.turn_starts['warm']:.0f}, cold {warm.turn_starts['cold']:.0f}); {load}",
            "p50 ≤ 100 ms, p99 ≤ 300 ms",
            p50 <= TARGET_P50_S and p99 <= TARGET_P99_S,
        ),
        Row(
            "where a warm send's time goes (median time since the send each stage was reached: "
            "Temporal's workflow history, the turn's stored event, the fake model)",
            command,
            f"{stage_medians(warm.stages)}. The same claude bare (no sandbox, MCP bridge or model "
            f"proxy), warm: its stdin → model request {latency_summary(bare)}",
            "—",
            None,
        ),
        Row(
            "baseline, same run: `HIVE_WARM_AGENTS=0` (every turn starts claude in its sandbox "
            "and resumes the session)",
            command,
            f"{latency_summary(baseline)}; {warm_count(cold)}; cold / warm: p50 "
            f"{percentile(baseline, 50) / p50:.0f}×",
            "—",
            None,
        ),
    ]


def exchange_rows(warm: HiveRun, cold: HiveRun, hops: int, command: str) -> list[Row]:
    def result(run: HiveRun) -> str:
        ex = run.exchange
        return (
            f"{ex.wall_s:.2f} s operator send → answer; model's first request of hop 0 → hop "
            f"{hops}: {ex.hops_s:.2f} s ({ms(ex.hops_s / hops)} per hop)"
        )

    return [
        Row(
            f"{hops}-hop exchange between two warm agents: each turn sends the next hop to the "
            "other with `mcp__hive__send`, the last tells the operator",
            command,
            result(warm),
            "—",
            None,
        ),
        Row(
            f"baseline, same run: the {hops}-hop exchange with `HIVE_WARM_AGENTS=0`",
            command,
            f"{result(cold)}; cold / warm {cold.exchange.wall_s / warm.exchange.wall_s:.1f}×",
            "—",
            None,
        ),
    ]


def per_role(totals: dict[str, float], render: Callable[[float], str]) -> str:
    ordered = sorted(totals.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {render(value)}" for name, value in ordered)


def memory_row(warm: HiveRun, cold: HiveRun, command: str) -> Row:
    mem = warm.memory
    assert mem is not None
    agents = max(1, len(mem.rss))
    cpu_each = mem.cpu_s / mem.window_s / agents
    rss_each = {name: value / agents for name, value in mem.rss_by_role.items()}
    cpu_share = {name: value / mem.window_s for name, value in mem.cpu_by_role.items()}
    wakeups = {name: value / mem.window_s / agents for name, value in mem.wakeups_by_role.items()}
    return Row(
        f"memory and idle CPU of {len(mem.rss)} idle warm agents (each: bwrap, claude, its MCP "
        "bridge, the model port forwarder)",
        command,
        f"RSS per agent {', '.join(mb(r) for r in mem.rss)} (of which {per_role(rss_each, mb)}"
        f"); total {mb(sum(mem.rss))} (`hive_warm_rss_bytes` {mb(mem.metric_rss)}, "
        f"`hive_warm_agents` {mem.metric_warm:.0f}); PSS per agent "
        f"{', '.join(mb(p) for p in mem.pss)}, total {mb(sum(mem.pss))}; {mem.processes} "
        f"processes. Idle CPU over {mem.window_s:.0f} s: {cpu_each:.2%} of a core per agent, "
        f"{mem.cpu_s / mem.window_s:.2%} for all ({per_role(cpu_share, lambda v: f'{v:.2%}')}"
        f"); wake-ups per agent per second: {per_role(wakeups, lambda v: f'{v:.1f}')}. With "
        f"`HIVE_WARM_AGENTS=0`: {cold.idle_trees} sandboxes between turns",
        "idle CPU ≈ 0 (≤ 1% of a core per warm agent)",
        cpu_each <= TARGET_IDLE_CPU,
    )


async def run(
    samples: int = 40, cold_samples: int = 12, agents: int = 4, hops: int = 10
) -> list[Row]:
    if not 2 <= agents <= len(AGENT_NAMES):
        raise ValueError(f"agents: 2 to {len(AGENT_NAMES)}")
    load = load_average()
    fake = FakeAnthropic(responder=hive_responder(behaviour)).start()
    try:
        bare = await bare_stdin_to_model(fake, samples)
        # Unix socket paths are short (107 bytes): keep the temp dirs near the root.
        with tempfile.TemporaryDirectory(prefix="hb-", dir="/tmp") as tmp:
            warm = await measure(Plan("warm", 8, samples, agents, hops), fake, Path(tmp) / "w")
            cold = await measure(Plan("cold", 0, cold_samples, 2, hops), fake, Path(tmp) / "c")
    finally:
        fake.stop()
    command = f"{PYTHON} -m bench.warm_agents {samples} --cold-samples {cold_samples}"
    if agents != 4:
        command += f" --agents {agents}"
    if hops != 10:
        command += f" --hops {hops}"
    return [
        *latency_rows(warm, cold, bare, command, load),
        *exchange_rows(warm, cold, hops, command),
        memory_row(warm, cold, command),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="?", type=int, default=40)
    parser.add_argument("--cold-samples", type=int, default=12)
    parser.add_argument("--agents", type=int, default=4, help="warm agents for the memory row")
    parser.add_argument("--hops", type=int, default=10)
    args = parser.parse_args()
    print_rows(asyncio.run(run(args.samples, args.cold_samples, args.agents, args.hops)))


if __name__ == "__main__":
    main()
