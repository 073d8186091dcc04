"""Conversations between agents under load: 20 chains of 10 hops over 5 agents, both cores busy.

Each hop is a real claude turn in a bwrap sandbox whose model (the fake API) answers the wake
prompt by passing the chain on with the hive `send` tool. On a loaded machine the hive MCP bridge
(a Python start-up inside the sandbox) connects slowly; a turn without its hive tools must never
consume its message, so every chain must finish and every hop happen exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.anthropic_api import FakeAnthropic
from tests.rig.agent_scripts import Wake, hive_responder, send, wake_of

pytestmark = pytest.mark.integration

AGENTS = [f"c{i}" for i in range(1, 6)]
CHAINS = 20
HOPS = 10
HOP = re.compile(r"\Achain (\d+) hop (\d+)\Z")


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Both cores spinning, at the hive's own priority."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def pass_it_on(wake: Wake) -> Any:
    found = HOP.match(wake.body)
    if found is None:
        return None
    chain, hop = int(found.group(1)), int(found.group(2))
    if hop == HOPS:
        return send("operator", f"chain {chain} done")
    following = AGENTS[(AGENTS.index(wake.agent) + 1) % len(AGENTS)]
    return send(following, f"chain {chain} hop {hop + 1}")


async def test_twenty_ten_hop_chains_finish_with_every_hop_once_on_a_busy_machine(
    start_c0re: Any, fake_model: FakeAnthropic, busy_cores: None
) -> None:
    fake_model.responder = hive_responder(pass_it_on)
    hive = await start_c0re(agents=[], container_backend="bwrap")
    for name in AGENTS:
        await hive.spawn_approved(name, "pass chains on")

    for chain in range(1, CHAINS + 1):
        await hive.send(AGENTS[chain % len(AGENTS)], f"chain {chain} hop 1")
    done: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40 * 60
    while len(done) < CHAINS and loop.time() < deadline:
        message = await hive.operator_recv(wait_seconds=60)
        if message is not None and message.body.endswith(" done"):
            done.append(message.body)
        for name in AGENTS:
            status = await hive.status(name)
            assert status.state not in ("paused", "over_budget"), (name, status)
    assert sorted(done) == sorted(f"chain {c} done" for c in range(1, CHAINS + 1))

    hops = collections.Counter(
        (m.sender, m.recipient, m.body) for m in hive.messages() if HOP.match(m.body)
    )
    assert len(hops) == CHAINS * HOPS, "every hop of every chain was sent"
    assert set(hops.values()) == {1}, [k for k, n in hops.items() if n > 1]
    # Every hop reached its agent's model once: no turn ran twice on the same message.
    woken = collections.Counter(
        (wake.agent, wake.body)
        for request in fake_model.turn_requests()
        if (wake := wake_of(request)) is not None and HOP.match(wake.body)
    )
    assert len(woken) == CHAINS * HOPS and set(woken.values()) == {1}, [
        k for k, n in woken.items() if n > 1
    ]
