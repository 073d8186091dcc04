"""SIGKILL hive-c0re just after a turn's `send`: the retried turn must not send the message again.

The script. Three agents in a ring, a → b → c → a, relay three chains of hops. The operator
starts each chain by sending `hop:<chain>:0` to a, b and c. An agent woken by `hop:X:n` with
n < HOPS sends `hop:X:n+1` to the next agent of the ring, and ends its turn once it sees the
send's result; `hop:X:HOPS` ends the chain. The scripted model is a naive real agent: it never
checks whether it sent before, so whatever the turn does again, it does again.

The faults. Three SIGKILLs of hive-c0re (the process only: its claude children must die by
their parent-death signal, and the test checks they do), each aimed at the window between a
turn's `send` and the turn's end: the fake model holds the request that carries a send's result
("sent #…", so the message is stored and the turn has not finished) until hive-c0re has been
killed and restarted on the same state dir and the same Temporal. A seeded RNG (the seed is
printed; `HIVE_FAULTS_SEED` replays one) picks three distinct hop numbers, and kill k aims at the
first send of a hop numbered at least the k-th, so the kills spread over the run. Temporal retries
the interrupted turns once their heartbeat times out; a retried turn runs claude again on the
message it had claimed, and the model makes the same `send` call again. (Every turn in flight at
a kill is retried, so another agent's turn that had sent by then repeats its send too.)

What "duplicate" means. A hop is sent by the turn that a copy of the previous hop woke, so
without faults every body is stored once. A duplicate send is a stored hop beyond the copies of
the hop that caused it: count(hop:X:n+1) - count(hop:X:n), i.e. a send made again by a retry
of the turn that had made it. Each duplicate also forks its chain (the copy wakes the next agent
again, and that turn relays it in turn), so the extra messages are the duplicates and their
forks' hops: the sum over bodies of (count - 1). Forks end at HOPS, so the run ends even when
duplicates happen. The test asserts none: a turn's sends happen once however often the turn is
retried (hive-c0re recognises the retried call and answers it with the message stored the first
time), and no hop is lost.

Size. 3 chains of HOPS = 6 sends, 21 messages without duplicates: about a minute on 2 cores,
most of it the three restarts and the retries' heartbeat timeouts (duplicates fork the chains
and make it longer).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.service import RPCError

from tests.fakes.anthropic_api import FakeAnthropic, Gate, RecordedRequest, Step, Text, ToolUse
from tests.faults import StoredMessage, stored_rows
from tests.rig.agent_scripts import send, turn_view
from tests.rig.c0re import RunningC0re, StartC0re
from tests.rig.hive_process import pids_with_cwd, wait_gone
from tests.rig.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]

AGENTS = ["a", "b", "c"]
NEXT = {agent: AGENTS[(i + 1) % len(AGENTS)] for i, agent in enumerate(AGENTS)}
CHAINS = {"x": "a", "y": "b", "z": "c"}  # chain -> the agent the operator starts it at
HOPS = 6  # sends per chain; also bounds each fork a duplicate starts
KILLS = 3  # at most max_turn_attempts - 1: even a turn hit by every kill is retried
HOP = re.compile(r"^hop:(\w+):(\d+)$")
SENT = re.compile(r"^sent #(\d+) ")


def _work(hive: RunningC0re, agent: str) -> Path:
    return hive.env.state_dir / "agents" / agent / "work"


@dataclass
class Aim:
    """One kill's target: the first send result of a hop numbered `at_least` or more; `reached`
    opens when its request is held, and the model answers it only once `release` opens."""

    at_least: int
    reached: Gate = field(default_factory=Gate)
    release: Gate = field(default_factory=Gate)
    what: str = ""


class Ring:
    """The fake model's script: a naive relay (see the module docstring), plus the kill aims."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.aim: Aim | None = None
        self.sent_ids: set[int] = set()
        # Send results naming a message an earlier result named: a repeated send answered
        # with the original.
        self.answered_again = 0

    def aim_at(self, at_least: int) -> Aim:
        with self.lock:
            self.aim = Aim(at_least)
            return self.aim

    def respond(self, request: RecordedRequest) -> Step:
        view = turn_view(request)
        if view is None:
            return Text("(not a wake prompt)")
        if "mcp__hive__send" not in request.tool_names:
            # claude -p connects MCP servers in the background; a real model waits for them.
            return ToolUse("WaitForMcpServers", {"servers": ["hive"]})
        agent, hop = view.wake.agent, HOP.match(view.wake.body)
        if hop is None:
            return Text("not a hop")
        chain, n = hop.group(1), int(hop.group(2))
        last = view.last
        if last is None or last.startswith("ready:"):
            # The turn's opening (a retried turn opens again: the same wake prompt, no results
            # after it). Relay the hop, whether or not an earlier attempt did.
            if n >= HOPS:
                return Text(f"chain {chain} done")
            return send(NEXT[agent], f"hop:{chain}:{n + 1}")
        if (sent := SENT.match(last)) is None:
            return Text(f"send failed: {last[:200]}")  # ends the turn; the hop shows as lost
        # The send is stored and the turn is not over: the window the kills aim at.
        with self.lock:
            if int(sent.group(1)) in self.sent_ids:
                self.answered_again += 1
            self.sent_ids.add(int(sent.group(1)))
            aim = self.aim
            if aim is None or n + 1 < aim.at_least:
                aim = None
            else:
                self.aim = None
                aim.what = f"{agent}'s turn on hop:{chain}:{n}, after `{last[:60]}`"
        if aim is None:
            return Text("relayed")
        aim.reached.open()
        return Text("relayed", hang=aim.release)


async def _settled(hive: RunningC0re, finals: set[str]) -> list[StoredMessage] | None:
    """The rows, once every chain reached its last hop and the hive has nothing left to do:
    every row delivered, then every agent idle, then the same rows again (None until then).
    Rows first: a hop sent by a turn that ends before its agent's status is read shows up in
    the second read (a new id), so no hop in flight passes for quiet."""
    rows = await asyncio.to_thread(stored_rows, hive)
    if not finals <= {r.body for r in rows} or not all(r.delivered_at for r in rows):
        return None
    try:
        states = [(await hive.status(agent)).state for agent in AGENTS]
    except RPCError:  # e.g. the worker not polling yet
        return None
    if states != ["idle"] * len(AGENTS):
        return None
    again = await asyncio.to_thread(stored_rows, hive)
    same = [(r.id, r.delivered_at) for r in again] == [(r.id, r.delivered_at) for r in rows]
    return again if same else None


async def test_a_turn_retried_after_its_send_does_not_send_again(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    seed = int(os.environ.get("HIVE_FAULTS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed {seed} (HIVE_FAULTS_SEED={seed} replays the kill points)")
    rng = random.Random(seed)
    ring = Ring()
    fake_model.responder = ring.respond
    hive = await start_c0re(
        agents=AGENTS,
        turn_heartbeat_timeout_s="4",  # the interrupted turns are retried soon after the kill
        send_rate_per_minute="100000",
        max_turns_per_hour="100000",
        max_spend_usd_per_day="100000",
    )
    for chain, agent in CHAINS.items():
        await hive.send(agent, f"hop:{chain}:0")

    # Distinct and increasing, to spread the kills over the run; each is reached, as the chain
    # a kill held goes on to HOPS once hive-c0re is back.
    levels = sorted(rng.sample(range(1, HOPS + 1), KILLS))
    for k, level in enumerate(levels):
        aim = ring.aim_at(level)
        try:
            await asyncio.wait_for(aim.reached.wait(), 180)
        except TimeoutError:
            raise AssertionError(f"kill {k + 1}: no send result reached the model") from None
        running = [p for a in AGENTS for p in pids_with_cwd(_work(hive, a))]
        assert running, f"kill {k + 1}: no claude running though {aim.what} is held"
        hive.process.kill()
        assert wait_gone(running) == [], f"kill {k + 1}: claude outlived hive-c0re"
        print(f"kill {k + 1} (hop >= {level}) in {aim.what}; {len(running)} turn processes died")
        await asyncio.to_thread(hive.restart)
        aim.release.open()  # its claude is gone; only frees the fake's handler

    planned = {f"hop:{chain}:{n}" for chain in CHAINS for n in range(HOPS + 1)}
    finals = {f"hop:{chain}:{HOPS}" for chain in CHAINS}
    # Polled: only the store and the workflows' status queries know the hive is quiet.
    try:
        rows = await eventually(
            lambda: _settled(hive, finals), what="a quiet hive", timeout=240, interval=0.5
        )
    except AssertionError:
        now = await asyncio.to_thread(stored_rows, hive)
        states = {a: (await hive.status(a)).state for a in AGENTS}
        waiting = [(r.id, r.recipient, r.body) for r in now if not r.delivered_at]
        raise AssertionError(
            f"not quiet with every chain at hop {HOPS} after 240 s: "
            f"{sorted(planned - {r.body for r in now})} never stored, undelivered "
            f"{waiting}, agents {states}"
        ) from None

    counts = Counter(r.body for r in rows)
    unexpected = sorted(set(counts) - planned)
    assert not unexpected, f"bodies nobody planned: {unexpected}"
    lost = sorted(planned - set(counts))
    assert not lost, f"hops never stored: {lost}"
    # A send made twice: more copies of a hop than of the hop whose turns sent it.
    dup, repeated = 0, {}
    for chain in CHAINS:
        for n in range(1, HOPS + 1):
            body = f"hop:{chain}:{n}"
            if (more := counts[body] - counts[f"hop:{chain}:{n - 1}"]) > 0:
                dup += more
                repeated[body] = [(r.id, r.sender, r.recipient) for r in rows if r.body == body]
    extra = sum(n - 1 for n in counts.values())  # the repeated sends and their forks' hops
    with ring.lock:
        again = ring.answered_again
    print(
        f"duplicate sends: {dup} ({extra} extra messages, {len(rows)} stored); "
        f"{again} repeated sends answered with the original message"
    )
    # Not vacuous: every kill held a turn that had sent, and a later attempt of that turn sent
    # again, stored anew (a duplicate) or answered with the original.
    assert dup + again >= KILLS, f"only {dup + again} repeated sends after {KILLS} kills"
    doubled = {body: n for body, n in sorted(counts.items()) if n > 1}
    assert dup == 0 and extra == 0, (
        f"{dup} sends repeated by retried turns, (id, sender, recipient) of each copy: "
        f"{repeated}; {extra} extra messages with their forks, copies of each body: {doubled}"
    )
