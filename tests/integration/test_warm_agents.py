"""Warm agents end to end: real hive-c0re, dev server and claude CLI, fake model.

After a turn that ended well an agent's claude (`--input-format stream-json`) stays running and
the agent's next turn writes its prompt to that process; `HIVE_WARM_AGENTS` (LRU) and
`HIVE_WARM_IDLE_S` bound how many stay warm and for how long. What a user notices, asserted
here: the same claude process answers the next message (its pid, and the `warm` flag of the
turn's opening "hive" event), the model keeps the conversation, each turn costs what it costs
(not the process's running total), a cold start when warm agents are off, evicted or idle, and
real tool work (Write, Bash, Read) carried across warm turns.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from hyperhive.store import agents as agent_store
from hyperhive.store.agents import MESSAGES, TURN_RECORDS
from tests.fakes.anthropic_api import (
    Bash,
    FakeAnthropic,
    Gate,
    Read,
    RecordedRequest,
    Step,
    Text,
    ToolUse,
    Write,
)
from tests.rig.agent_scripts import Wake, for_agent, hive_responder, send, wake_of
from tests.rig.c0re import RunningC0re, StartC0re
from tests.rig.hive_process import pids_with_cwd, wait_gone
from tests.rig.polling import eventually

pytestmark = pytest.mark.integration

T = TypeVar("T")


# -- helpers (tests/faults/test_warm_agents.py uses them too) ------------------------------------


def answer_of(agent: str, body: str) -> str:
    """What an agent answers the operator's `body` with."""
    return f"answer from {agent}: {body}"


def answering(wake: Wake) -> Step | None:
    """Every agent answers every operator message once, with a send to the operator."""
    if wake.sender == "operator":
        return send("operator", answer_of(wake.agent, wake.body))
    return None


def work_dir(hive: RunningC0re, agent: str) -> Path:
    return hive.env.state_dir / "agents" / agent / "work"


def claude_pids(work: Path) -> list[int]:
    """The claude CLIs working in `work` (its MCP bridge works there too, but is no claude)."""
    found = []
    for pid in pids_with_cwd(work):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stream-json" in argv:
            found.append(pid)
    return found


async def the_claude_of(hive: RunningC0re, agent: str, timeout: float = 30) -> int:
    """The pid of the one claude working in `agent`'s work dir."""
    work = work_dir(hive, agent)

    def one() -> int | None:
        pids = claude_pids(work)
        return pids[0] if len(pids) == 1 else None

    # In a thread, as every look at /proc or the store here: it blocks.
    return await eventually(
        lambda: asyncio.to_thread(one),
        what=f"exactly one claude of {agent}",
        timeout=timeout,
        interval=0.1,
    )


async def no_claude_of(hive: RunningC0re, agent: str, timeout: float = 30) -> None:
    """Wait until nothing works in `agent`'s work dir (claude and its MCP bridge gone)."""
    work = work_dir(hive, agent)

    def gone() -> bool:
        return not pids_with_cwd(work)

    await eventually(
        lambda: asyncio.to_thread(gone),
        what=f"no process in {agent}'s work dir",
        timeout=timeout,
        interval=0.1,
    )


async def turn_done(hive: RunningC0re, agent: str, turns: int, timeout: float = 120) -> None:
    await hive.wait_status(agent, lambda s: s.turns_total == turns and s.state == "idle", timeout)


def _read(hive: RunningC0re, read: Callable[[Any], T]) -> T:
    engine = hive.engine()
    try:
        return read(engine)
    finally:
        engine.dispose()


def warm_flags(hive: RunningC0re, agent: str) -> list[bool]:
    """The `warm` flag of every turn attempt of `agent`, oldest first (the "hive" event that
    opens each attempt)."""
    events = _read(hive, lambda engine: agent_store.turn_events(engine, agent, limit=10_000))
    return [bool(e.payload["warm"]) for e in events if e.kind == "hive" and "warm" in e.payload]


def turn_records(hive: RunningC0re, agent: str) -> list[sa.Row[Any]]:
    """The agent's stored turn records (one per turn that ended), oldest first."""

    def read(engine: Any) -> list[sa.Row[Any]]:
        query = (
            sa.select(TURN_RECORDS).where(TURN_RECORDS.c.agent == agent).order_by(TURN_RECORDS.c.id)
        )
        with engine.connect() as conn:
            return list(conn.execute(query).all())

    return _read(hive, read)


def answers(hive: RunningC0re) -> Counter[str]:
    """How many times each answer reached the operator's inbox (stored messages)."""

    def read(engine: Any) -> list[str]:
        query = sa.select(MESSAGES.c.body).where(MESSAGES.c.recipient == "operator")
        with engine.connect() as conn:
            return [row.body for row in conn.execute(query)]

    return Counter(body for body in _read(hive, read) if body.startswith("answer from "))


def assert_answered_once(hive: RunningC0re, asked: dict[str, list[str]]) -> None:
    """Each message of `asked` ({agent: bodies}) answered once: one turn record (that ended
    well) per message, one answer in the operator's inbox."""
    expected = Counter(answer_of(agent, body) for agent, bodies in asked.items() for body in bodies)
    assert answers(hive) == expected
    for agent, bodies in asked.items():
        records = turn_records(hive, agent)
        assert [r.error_class for r in records] == ["none"] * len(bodies), records
        assert len({r.message_id for r in records}) == len(bodies), "one turn per message"


async def held(fake: FakeAnthropic, agent: str, body: str) -> None:
    """Until `agent`'s model request opening a turn on `body` has reached the model."""
    await fake.wait_for_async(
        lambda r: (w := wake_of(r)) is not None and w.agent == agent and w.body == body
    )


def wake_request(fake: FakeAnthropic, agent: str, body: str) -> RecordedRequest:
    """The last model request that opened a turn of `agent` on the message `body`."""
    found = [
        r
        for r in fake.turn_requests()
        if (w := wake_of(r)) is not None and w.agent == agent and w.body == body
    ]
    assert found, f"no model request of {agent} on {body!r}"
    return found[-1]


# -- the cases ---------------------------------------------------------------------------------


async def test_the_next_turns_run_in_the_same_claude_and_each_costs_its_own(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    fake_model.responder = hive_responder(answering)
    hive = await start_c0re(agents=["a"])
    bodies = ["first 7d1", "second 7d2", "third 7d3"]
    pids = []
    for n, body in enumerate(bodies, 1):
        await hive.send("a", body)
        await turn_done(hive, "a", n)
        pids.append(await the_claude_of(hive, "a"))

    assert pids[0] == pids[1] == pids[2], "one claude process ran all three turns"
    assert warm_flags(hive, "a") == [False, True, True]
    # The model keeps the conversation: turn 3 carries turns 1 and 2.
    third = wake_request(fake_model, "a", bodies[2])
    assert bodies[0] in third.messages_text and bodies[1] in third.messages_text
    assert_answered_once(hive, {"a": bodies})

    # claude's result carries the process's running total; each turn is recorded at its own
    # cost. Three alike turns cost about the same (the history grows a little), and the spend
    # is their sum, not 1 + 2 + 3 times a turn.
    costs = [float(r.cost_usd) for r in turn_records(hive, "a")]
    assert all(c > 0 for c in costs), costs
    assert max(costs) < 1.25 * min(costs), f"a turn's cost is not per turn: {costs}"
    status = await hive.status("a")
    assert status.spend_total_usd == pytest.approx(sum(costs), rel=1e-6)
    assert status.spend_total_usd < 4 * costs[0], costs


async def test_warm_agents_off_starts_claude_for_every_turn(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    fake_model.responder = hive_responder(answering)
    hive = await start_c0re(agents=["a"], warm_agents="0")
    bodies = ["cold one 3c1", "cold two 3c2"]
    for n, body in enumerate(bodies, 1):
        await hive.send("a", body)
        await turn_done(hive, "a", n)
        await no_claude_of(hive, "a")  # nothing stays running once the turn is over

    assert warm_flags(hive, "a") == [False, False]
    # Still one conversation: the second claude resumed the session.
    assert bodies[0] in wake_request(fake_model, "a", bodies[1]).messages_text
    assert_answered_once(hive, {"a": bodies})


async def test_one_warm_agent_at_most_the_last_one_used_stays(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    fake_model.responder = hive_responder(answering)
    hive = await start_c0re(agents=["a", "b"], warm_agents="1")
    order = [("a", "lru a1"), ("b", "lru b1"), ("a", "lru a2"), ("b", "lru b2")]
    done = Counter[str]()
    for agent, body in order:
        await hive.send(agent, body)
        done[agent] += 1
        await turn_done(hive, agent, done[agent])
        other = "b" if agent == "a" else "a"
        # The agent just used is warm; the other went cold (its claude exits).
        await no_claude_of(hive, other)
        await the_claude_of(hive, agent)

    # Each turn found its agent cold: the other agent's turn had taken the one warm place.
    assert warm_flags(hive, "a") == [False, False]
    assert warm_flags(hive, "b") == [False, False]
    assert "lru a1" in wake_request(fake_model, "a", "lru a2").messages_text
    assert_answered_once(hive, {"a": ["lru a1", "lru a2"], "b": ["lru b1", "lru b2"]})


async def test_an_idle_warm_claude_exits_and_the_next_turn_resumes(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    first, second = "before idle 5e1", "after idle 5e2"
    # Each turn waits at the model until the test has seen its claude (it may go cold 2 s
    # after its turn, so it is looked for while the turn runs).
    gates = {first: Gate(), second: Gate()}

    def behaviour(wake: Wake) -> Step | None:
        step = answering(wake)
        gate = gates.get(wake.body)
        return replace(step, hang=gate) if isinstance(step, ToolUse) and gate else step

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=["a"], warm_idle_s="2")
    work = work_dir(hive, "a")
    await hive.send("a", first)
    await held(fake_model, "a", first)
    warm = await the_claude_of(hive, "a")
    running = pids_with_cwd(work)
    gates[first].open()
    await turn_done(hive, "a", 1)
    # HIVE_WARM_IDLE_S=2 without a turn: it exits by itself, with its MCP bridge.
    assert await asyncio.to_thread(wait_gone, running, 30) == []
    assert pids_with_cwd(work) == []

    await hive.send("a", second)
    await held(fake_model, "a", second)
    assert await the_claude_of(hive, "a") != warm
    gates[second].open()
    await turn_done(hive, "a", 2)
    assert warm_flags(hive, "a") == [False, False]
    assert first in wake_request(fake_model, "a", second).messages_text
    assert_answered_once(hive, {"a": [first, second]})
    # The resumed session's first turn costs that turn, not the whole session's.
    costs = [float(r.cost_usd) for r in turn_records(hive, "a")]
    assert 0 < costs[1] < 1.25 * costs[0], costs


async def test_a_warm_agent_reads_in_its_next_turn_what_it_wrote_and_ran(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    """In bwrap (Bash runs there: bypassPermissions in a sandbox), bob writes a file and
    transforms it with Bash in one turn; in its next turn, on the same claude, it reads the
    result and sends it to the operator."""
    fake_model.responder = lambda request: Text("noted")
    hive = await start_c0re(agents=[], container_backend="bwrap")
    await hive.spawn_approved("bob", "keeps notes")
    fake_model.script_when(
        for_agent("bob"),
        # Turn 1.
        Write("/work/note.txt", "warm note 91\n"),
        Bash("tr a-z A-Z < /work/note.txt > /work/loud.txt && wc -c < /work/loud.txt", "shout"),
        Text("wrote it"),
        # Turn 2.
        Read("/work/loud.txt"),
        lambda request: send("operator", f"bob read: {request.last_tool_result}"),
        Text("sent it"),
    )
    await hive.send("bob", "write the note")
    await turn_done(hive, "bob", 1, timeout=180)
    await hive.send("bob", "read it back")
    reply = await hive.notice("bob read:")
    await turn_done(hive, "bob", 2)

    assert "WARM NOTE 91" in reply.body
    assert warm_flags(hive, "bob") == [False, True]
    work = work_dir(hive, "bob")
    assert (work / "loud.txt").read_text() == "WARM NOTE 91\n"
    turns = [r for r in fake_model.turn_requests() if for_agent("bob")(r)]
    results = [text for r in turns for text in r.tool_result_texts]
    assert "13" in results, results  # Bash ran (wc -c of the file it made)
    assert not [t for t in results if "permission" in t.lower() or "blocked" in t.lower()]
