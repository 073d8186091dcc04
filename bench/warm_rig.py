"""The rig of bench/warm_agents.py: a real `hive up` (bwrap backend, the pinned claude CLI)
against the fake model API, its agents spawned through approvals, the operator's side over HTTP,
and what the fake model has each agent do."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.common import hive_up_env, wait_idle
from hyperhive.domain import OPERATOR_NAME
from tests.fakes.anthropic_api import FakeAnthropic, RecordedRequest, Step, Text
from tests.fakes.fixtures import DEFAULT_CLAUDE_BIN
from tests.rig.agent_scripts import Wake, send
from tests.rig.c0re import RunningC0re
from tests.rig.hive_process import HiveProcess

AGENT_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
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
# one hive and its operator


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
    """`hive up` with no agents yet, the bwrap backend and `HIVE_WARM_AGENTS=warm_agents`, its
    model API `fake`. Unix socket paths are short (107 bytes): keep `base` near the root."""
    env = hive_up_env(base, [], DEFAULT_CLAUDE_BIN)
    env.extra.update(
        HIVE_CONTAINER_BACKEND="bwrap",
        HIVE_MODEL_BASE_URL=fake.base_url,
        HIVE_API_KEY="sk-ant-api03-bench",
        HIVE_WARM_AGENTS=str(warm_agents),
    )
    process = HiveProcess(env, "up")
    try:
        process.wait_ready(120)
        client = await Client.connect(env.temporal_target, data_converter=pydantic_data_converter)
    except BaseException:
        process.kill()
        raise
    return RunningC0re(env, process, client, [], base / "run")


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
