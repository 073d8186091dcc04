"""send → turn across hosts: the operator sends on host A to an agent whose turns run on host B.

    .venv/bin/python -m bench.cross_host [SENDS]

One Temporal dev server, one throwaway PostgreSQL store (tests/fakes/postgres.py) and two real
`hive c0re` sharing both, hosts "a" (agent "near") and "b" (agent "far"), each with its own
state dir, run dir, ports and agent-page port window, the process backend and the fake claude
of bench/send_to_turn.py (bench/common.py: FAKE_CLAUDE; both hosts log to one file).

The operator sends through host A's `POST /api/messages` (CSRF header, kept-alive connection),
alternating near/far, one at a time, each once the previous turn is over and the agent idle
again (its `status` query; that includes the empty run_turn with which the loop looks at the
inbox again after each turn). Host A stores the message and signals the workflow; far's turn
runs on host B (task queue hive-host-b). Measured: send → the message on claude's stdin; the
first send to each agent (starts its workflow) is a warm-up. near is the same-host baseline.

Where the time goes, from the workflows' histories (one machine, one clock): POST → the
`notify` signal recorded, → `run_turn` scheduled (workflow task), → started (the host queue's
poller took it), → the prompt on claude's stdin (the turn activity on the agent's host).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.common import (
    AGENT_PORT_SPAN,
    PYTHON,
    Row,
    bench_hive_settings,
    latency_summary,
    load_average,
    ms,
    percentile,
    print_rows,
    start_dev_server,
    token_body,
    wait_idle,
    write_fake_claude,
)
from bench.send_to_turn import wait_start
from hyperhive.store.db import make_engine, migrate
from hyperhive.temporal_ids import agent_workflow_id
from tests.fakes.postgres import _start_server, _stop_server
from tests.rig.c0re import register_spawned
from tests.rig.hive_process import HiveEnv, HiveProcess
from tests.rig.ports import free_ports

TARGET_RATIO = 2.0
TARGET_P50_S = 0.060
SETTLE_S = 0.02
NEAR, FAR = "near", "far"
HOSTS = {"a": NEAR, "b": FAR}  # host id → the agent registered on it
STAGES = ("POST → signal", "→ run_turn scheduled", "→ started", "→ claude's stdin")


@dataclass
class Samples:
    sent: list[float] = field(default_factory=list)
    posted: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)  # the prompt on claude's stdin

    def latencies(self) -> list[float]:
        return [s - t for t, s in zip(self.sent, self.started, strict=True)]


def host_envs(base: Path, store_url: str, temporal: str, claude: Path) -> list[HiveEnv]:
    """The env of each host's `hive c0re`, its agent registered in the shared store."""
    engine = make_engine(store_url)
    try:
        migrate(engine)
        ports = free_ports(4 * len(HOSTS))
        # Agent pages: one window per host, side by side below the ephemeral range.
        window = AGENT_PORT_SPAN // len(HOSTS)
        port_min = random.randrange(20_000, 31_000 - AGENT_PORT_SPAN)
        envs = []
        for i, (host_id, agent) in enumerate(HOSTS.items()):
            state, run = base / host_id / "state", base / host_id / "run"
            state.mkdir(parents=True)
            run.mkdir()
            register_spawned(state, engine, agent, host_id)
            dashboard, temporal_port, ui, manager = ports[4 * i : 4 * i + 4]
            env = HiveEnv(state, dashboard, temporal_port, ui)
            low = port_min + i * window
            env.extra.update(
                bench_hive_settings(run, claude, manager, low, window),
                HIVE_HOST_ID=host_id,
                HIVE_TEMPORAL_ADDRESS=temporal,
                HIVE_DB_URL=store_url,
            )
            envs.append(env)
        return envs
    finally:
        engine.dispose()


async def drive(client: Client, dashboard: str, log: Path, sends: int) -> dict[str, Samples]:
    """Warm-up sends first (one per agent), then `sends` more, alternating near/far."""
    agents = list(HOSTS.values())
    samples = {agent: Samples() for agent in agents}
    async with httpx.AsyncClient(base_url=dashboard, timeout=30) as http:
        headers = {"X-Hive-CSRF": (await http.get("/api/csrf")).json()["token"]}
        for i in range(len(agents) + sends):
            agent = agents[i % len(agents)]
            sent = time.time()
            response = await http.post(
                "/api/messages", json={"to": agent, "body": token_body(i)}, headers=headers
            )
            posted = time.time()
            if response.status_code != 201:
                raise RuntimeError(f"send failed: {response.status_code} {response.text}")
            mine = samples[agent]
            mine.sent.append(sent)
            mine.posted.append(posted)
            mine.started.append(await wait_start(log, i))
            await wait_idle(client, agent, len(mine.started))  # the turn over before the next
            await asyncio.sleep(SETTLE_S)
    return samples


async def stages(client: Client, agent: str, samples: Samples) -> list[list[float]]:
    """Per stage (STAGES), the samples of every turn after the warm-up, from the history."""
    signals: list[float] = []
    scheduled: dict[int, float] = {}
    turns: list[tuple[float, float, float]] = []  # (signal, scheduled, started)
    async for event in client.get_workflow_handle(agent_workflow_id(agent)).fetch_history_events():
        at = event.event_time.ToMicroseconds() / 1e6
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signals.append(at)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == "run_turn":
                scheduled[event.event_id] = at
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            of = event.activity_task_started_event_attributes.scheduled_event_id
            if of in scheduled:
                signal = max((s for s in signals if s <= scheduled[of]), default=scheduled[of])
                turns.append((signal, scheduled[of], at))
    per_turn = []
    # After each turn the loop looks at the inbox again (a run_turn finding no message): a
    # send's turn is the last run_turn started before its prompt reached claude.
    for sent, claude in list(zip(samples.sent, samples.started, strict=True))[1:]:
        signal, sched, begun = max((t for t in turns if t[2] <= claude), key=lambda t: t[2])
        per_turn.append([signal - sent, sched - signal, begun - sched, claude - begun])
    return [list(stage) for stage in zip(*per_turn, strict=True)]


def breakdown(figures: list[list[float]]) -> str:
    return ", ".join(
        f"{name} {ms(percentile(f, 50))}" for name, f in zip(STAGES, figures, strict=True)
    )


def stop(hive: HiveProcess) -> None:
    try:
        if hive.proc.poll() is None:
            hive.interrupt()
        else:
            hive.finish(10)  # already gone: join its output readers
    except subprocess.TimeoutExpired:
        hive.kill()
    for pipe in (hive.proc.stdout, hive.proc.stderr):
        if pipe is not None:
            pipe.close()


async def measure(base: Path, sends: int) -> tuple[dict[str, Samples], dict[str, str]]:
    log = base / "starts.log"
    claude = write_fake_claude(base, log)
    try:
        server, pg_base = _start_server()
    except pytest.fail.Exception as exc:  # not an Exception: run_all would not see it
        raise RuntimeError(f"PostgreSQL did not start: {exc}") from None
    hives: list[HiveProcess] = []
    dev: WorkflowEnvironment | None = None
    try:
        dev = await start_dev_server()
        target = dev.client.service_client.config.target_host
        envs = host_envs(base, server.url(), target, claude)
        hives = [HiveProcess(env, "c0re") for env in envs]
        for hive in hives:
            hive.wait_ready(120)
        samples = await drive(dev.client, envs[0].dashboard, log, sends)
        notes = {a: breakdown(await stages(dev.client, a, s)) for a, s in samples.items()}
        return samples, notes
    except BaseException:
        for host_id, hive in zip(HOSTS, hives, strict=False):
            print(f"--- hive c0re (host {host_id}) output ---\n{hive.output()[-4000:]}")
        raise
    finally:
        try:
            for hive in hives:
                stop(hive)
        finally:
            _stop_server(server, pg_base)
            if dev is not None:
                await dev.shutdown()


async def run(sends: int = 100) -> list[Row]:
    load = load_average()
    # Unix socket paths are short (107 bytes): keep the temp dir near the root.
    with tempfile.TemporaryDirectory(prefix="hx-", dir="/tmp") as tmp:
        samples, notes = await measure(Path(tmp), sends)
    near, far = samples[NEAR].latencies(), samples[FAR].latencies()
    p50, base_p50 = percentile(far[1:], 50), percentile(near[1:], 50)
    p99, base_p99 = percentile(far[1:], 99), percentile(near[1:], 99)
    command = f"{PYTHON} -m bench.cross_host {sends}"

    def post(agent: str) -> str:
        s = samples[agent]
        return ms(percentile([p - t for t, p in zip(s.sent, s.posted, strict=True)][1:], 50))

    return [
        Row(
            "cross-host send → turn started: operator `POST /api/messages` on host A to an idle "
            "agent on host B (two `hive c0re`, one Temporal dev server, one PostgreSQL store, "
            "process backend), the message on its claude's stdin",
            command,
            f"{latency_summary(far[1:])}; cross / same host: p50 {p50 / base_p50:.1f}×, "
            f"p99 {p99 / base_p99:.1f}×; POST itself p50 {post(FAR)}; p50 by stage: "
            f"{notes[FAR]}; first send (starts its workflow) {ms(far[0])}; {load}",
            "p50 ≤ 2× the same-host p50, or ≤ 60 ms",
            p50 <= TARGET_RATIO * base_p50 or p50 <= TARGET_P50_S,
        ),
        Row(
            "cross-host send → turn started: the same to an idle agent on host A, same run, "
            "the baseline",
            command,
            f"{latency_summary(near[1:])}; POST itself p50 {post(NEAR)}; p50 by stage: "
            f"{notes[NEAR]}; first send (starts its workflow) {ms(near[0])}",
            "—",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sends", nargs="?", type=int, default=100)
    args = parser.parse_args()
    if args.sends < 2:
        parser.error("SENDS must be at least 2 (one per agent after the warm-ups)")
    print_rows(asyncio.run(run(args.sends)))


if __name__ == "__main__":
    main()
