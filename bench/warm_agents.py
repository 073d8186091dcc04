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
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.warm_claude import tree_rss_bytes, user_message_line
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
from hyperhive.domain import OPERATOR_NAME
from hyperhive.store import agents as agent_store
from tests.fakes.anthropic_api import FakeAnthropic, RecordedRequest, Step, Text
from tests.fakes.fixtures import DEFAULT_CLAUDE_BIN, clean_claude_env
from tests.rig.agent_scripts import Wake, hive_responder, send
from tests.rig.c0re import RunningC0re
from tests.rig.hive_process import HiveEnv, HiveProcess
from tests.rig.ports import free_ports

AGENT_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
TARGET_P50_S = 0.100
TARGET_P99_S = 0.300
TARGET_IDLE_CPU = 0.01  # of one core, per idle warm agent
# The first seconds after a turn still carry claude's own end-of-turn work: idle starts later.
IDLE_SETTLE_S = 2.0
IDLE_WINDOW_S = 10.0
# After an agent's workflow reports idle, let its turn's last writes land before the next send.
SETTLE_S = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
IS_UP = re.compile(r"(\S+) is up\b")  # workflows/spawn.py tells the requester
HOP = re.compile(r"hop (\d+) of (\d+) \[(\w+)\]")


# ---------------------------------------------------------------------------------------------
# the fake model: what each agent does


def behaviour(wake: Wake) -> Step | None:
    """A hop is passed on to the other agent (the last one goes to the operator); anything else
    is a latency sample, answered at once with no tool call."""
    hop = HOP.fullmatch(wake.body)
    if hop is None:
        return Text("ok")
    k, hops, label = int(hop.group(1)), int(hop.group(2)), hop.group(3)
    if k >= hops:
        return send(OPERATOR_NAME, f"hops done [{label}]")
    other = AGENT_NAMES[1] if wake.agent == AGENT_NAMES[0] else AGENT_NAMES[0]
    return send(other, f"hop {k + 1} of {hops} [{label}]")


def first_request_of(body: str) -> Callable[[RecordedRequest], bool]:
    """The first model request of the turn `body` woke (its prompt carries it; a tool round
    trip's request has tool results instead). Bodies are unique across the run."""

    def matches(request: RecordedRequest) -> bool:
        return request.kind == "turn" and not request.tool_results and body in request.prompt

    return matches


# ---------------------------------------------------------------------------------------------
# one hive


@dataclass
class Sample:
    agent: str
    sent: float
    posted: float
    message_id: int
    model_at: float  # the fake model received the turn's first request

    @property
    def latency(self) -> float:
        return self.model_at - self.sent


@dataclass
class Exchange:
    wall_s: float  # operator's send of hop 0 → the operator holds the last turn's answer
    hops_s: float  # the model's first request of hop 0 → that of the last hop


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


@dataclass
class HiveRun:
    samples: list[Sample]
    warm: list[bool | None]  # per sample: the turn's "hive" event said warm (None: not found)
    stages: list[dict[str, float]]  # per sample: stage → seconds since the send
    exchange: Exchange
    memory: Memory | None
    idle_trees: int  # sandboxes alive while every agent is idle
    turn_starts: dict[str, float] = field(default_factory=dict)


class Operator:
    """The operator's side as the dashboard does it: a kept-alive connection, the CSRF header."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers

    async def send(self, to: str, body: str) -> tuple[float, float, int]:
        """(sent, POST returned, message id)."""
        sent = time.time()
        response = await self.http.post(
            "/api/messages", json={"to": to, "body": body}, headers=self.headers
        )
        posted = time.time()
        if response.status_code != 201:
            raise RuntimeError(f"send failed: {response.status_code} {response.text}")
        return sent, posted, int(response.json()["id"])

    async def metrics(self) -> dict[str, float]:
        """`/metrics` as {"name{labels}": value}."""
        text = (await self.http.get("/metrics")).text
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                found[name] = float(value)
        return found


async def start_hive(base: Path, fake: FakeAnthropic, warm_agents: int) -> RunningC0re:
    env = HiveEnv.fresh(base / "state")
    [manager_port] = free_ports(1)
    # Unix socket paths are short (107 bytes): `base` is near the root (see run()).
    run_dir = base / "run"
    env.extra.update(
        HIVE_RUN_DIR=str(run_dir),
        HIVE_CLAUDE_BIN=str(DEFAULT_CLAUDE_BIN),
        HIVE_CONTAINER_BACKEND="bwrap",
        HIVE_CREATE_MANAGER="false",
        HIVE_MANAGER_PORT=str(manager_port),
        HIVE_MODEL_BASE_URL=fake.base_url,
        HIVE_API_KEY="sk-ant-api03-bench",
        HIVE_MAX_TURNS_PER_HOUR="100000",
        HIVE_SEND_RATE_PER_MINUTE="100000",
        HIVE_WARM_AGENTS=str(warm_agents),
    )
    process = HiveProcess(env, "up")
    try:
        process.wait_ready(120)
        client = await Client.connect(env.temporal_target, data_converter=pydantic_data_converter)
    except BaseException:
        process.kill()
        raise
    return RunningC0re(env, process, client, [], run_dir)


async def spawn_all(hive: RunningC0re, agents: Sequence[str], timeout: float = 300) -> None:
    """`hive spawn` for every agent, `hive approve` for each approval as it shows up, until the
    operator was told each one is up (all at once: a spawn takes seconds, mostly waiting)."""
    for agent in agents:
        requested = hive.hive("spawn", agent, "--purpose", "benchmarks")
        if requested.returncode != 0:
            raise RuntimeError(f"hive spawn {agent}: {requested.stdout}{requested.stderr}")
    approved: set[str] = set()
    up: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while up != set(agents):
        if loop.time() > deadline:
            raise TimeoutError(f"spawned: {sorted(up)} of {list(agents)}")
        for approval in hive.approvals():
            pending = approval.kind == "spawn" and approval.status == "pending"
            if pending and approval.agent not in approved:
                decided = hive.hive("approve", str(approval.id))
                if decided.returncode != 0:
                    raise RuntimeError(f"hive approve: {decided.stdout}{decided.stderr}")
                approved.add(approval.agent)
        message = await hive.operator_recv(wait_seconds=1)
        found = IS_UP.match(message.body) if message is not None else None
        if found is not None:
            up.add(found.group(1))


async def spawn_and_warm_up(
    hive: RunningC0re, op: Operator, agents: Sequence[str], label: str
) -> None:
    """Spawn the agents, then one turn each, all at once (it creates the session; in the warm
    hive it leaves each agent's claude running)."""
    await spawn_all(hive, agents)
    for agent in agents:
        await op.send(agent, f"warm-up of {agent} [{label}]")
    for agent in agents:
        await wait_idle(hive.client, agent, 1, timeout=120)


async def turns_total(hive: RunningC0re, agent: str) -> int:
    return (await hive.status(agent)).turns_total


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
# where a warm send's time goes


def turn_flags(hive: RunningC0re, agents: Sequence[str]) -> dict[int, tuple[str, bool, float]]:
    """message id → (turn id, warm, time the turn's "hive" event was stored), from the store.

    The event is stored right after the prompt was written to claude's stdin."""
    engine = hive.engine()
    try:
        found: dict[int, tuple[str, bool, float]] = {}
        for agent in agents:
            for event in agent_store.turn_events(engine, agent, limit=100_000):
                payload = event.payload
                if event.kind == "hive" and "message_id" in payload:
                    warm = bool(payload.get("warm"))
                    stored = event.created_at.timestamp()
                    found.setdefault(int(payload["message_id"]), (event.turn_id, warm, stored))
        return found
    finally:
        engine.dispose()


async def turn_timeline(hive: RunningC0re, agent: str) -> dict[str, dict[str, float]]:
    """turn id → {"signal", "scheduled", "started"}: from the agent's workflow history, when
    Temporal recorded the `notify` signal that woke the turn, scheduled `run_turn` and when the
    worker started it."""
    history = await hive.workflow(agent).fetch_history()
    timeline: dict[str, dict[str, float]] = {}
    by_event: dict[int, str] = {}
    last_signal = 0.0
    for event in history.events:
        at = event.event_time.ToNanoseconds() / 1e9
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            last_signal = at
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name != "run_turn":
                continue
            turn_id = str(json.loads(attributes.input.payloads[0].data)["turn_id"])
            by_event[event.event_id] = turn_id
            timeline[turn_id] = {"signal": last_signal, "scheduled": at}
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            turn = by_event.get(event.activity_task_started_event_attributes.scheduled_event_id)
            if turn is not None:
                timeline[turn].setdefault("started", at)
    return timeline


STAGES = ("posted", "signal", "scheduled", "started", "stdin", "model")
STAGE_NAMES = {
    "posted": "POST returned",
    "signal": "signal recorded",
    "scheduled": "`run_turn` scheduled",
    "started": "activity started",
    "stdin": "prompt on claude's stdin",
    "model": "model request",
}


async def stages_of(
    hive: RunningC0re, samples: Sequence[Sample], flags: dict[int, tuple[str, bool, float]]
) -> list[dict[str, float]]:
    """For each sample: every stage's time since the send (stages not found are left out)."""
    timelines: dict[str, dict[str, float]] = {}
    for agent in {s.agent for s in samples}:
        timelines.update(await turn_timeline(hive, agent))
    found: list[dict[str, float]] = []
    for sample in samples:
        turn_id, _, stored = flags.get(sample.message_id, ("", False, 0.0))
        marks = {"posted": sample.posted, **timelines.get(turn_id, {}), "model": sample.model_at}
        if stored:
            marks["stdin"] = stored
        found.append({k: v - sample.sent for k, v in marks.items() if v})
    return found


async def until_result(stdout: asyncio.StreamReader) -> None:
    """Read a stream-json turn to its `result` event."""
    while line := await stdout.readline():
        if json.loads(line).get("type") == "result":
            return
    raise RuntimeError("bare claude exited before its turn's result")


async def bare_stdin_to_model(fake: FakeAnthropic, count: int) -> list[float]:
    """claude's own share of a warm turn's start: the same CLI run bare (no sandbox, no MCP
    bridge, no model proxy) with `--input-format stream-json`, one warm-up turn, then `count`
    user messages, each timed from its stdin write to the model's first request."""
    with tempfile.TemporaryDirectory(prefix="hb-bare-", dir="/tmp") as tmp:
        home, cwd = Path(tmp) / "home", Path(tmp) / "work"
        home.mkdir()
        cwd.mkdir()
        claude = await asyncio.create_subprocess_exec(
            str(DEFAULT_CLAUDE_BIN),
            *("-p", "--input-format", "stream-json", "--output-format", "stream-json"),
            *("--verbose", "--permission-mode", "bypassPermissions"),
            env=clean_claude_env(fake.base_url, home),
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=16 * 1024 * 1024,
        )
        assert claude.stdin is not None and claude.stdout is not None
        latencies: list[float] = []
        try:
            for i in range(count + 1):
                body = f"bare-{i} [{os.getpid()}-{time.monotonic_ns()}]"
                written = time.time()
                claude.stdin.write(user_message_line(body))
                await claude.stdin.drain()
                request = await fake.wait_for_async(first_request_of(body), timeout=120)
                if i:  # the first one is claude's start-up
                    latencies.append(request.received_at - written)
                await until_result(claude.stdout)
        finally:
            claude.stdin.close()
            await asyncio.wait_for(claude.wait(), 30)
    return latencies


# ---------------------------------------------------------------------------------------------
# memory and CPU of the warm claudes


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


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


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` alone (its children are counted under their own role)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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
            token = (await http.get("/api/csrf")).json()["token"]
            op = Operator(http, {"X-Hive-CSRF": token})
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


def stage_medians(run: HiveRun) -> str:
    """Median time since the send at which each stage was reached."""
    parts = []
    for stage in STAGES:
        values = [s[stage] for s in run.stages if stage in s]
        if values:
            parts.append(f"{STAGE_NAMES[stage]} +{ms(statistics.median(values))}")
    return " → ".join(parts)


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
            f"{stage_medians(warm)}. The same claude bare (no sandbox, MCP bridge or model "
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
