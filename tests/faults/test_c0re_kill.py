"""SIGKILL hive-c0re at random points while 5 agents exchange messages; nothing lost or doubled.

The script. The operator sends "go" to each of the agents a..e. Every turn of an agent, whatever
woke it, sends the next batch of its share of the messages (bodies `m:<sender>:<n>`, unique;
recipients round-robin over the other agents; several `send` calls per model reply), drains its
inbox with batches of `recv`, and, while more of its share remains, ends with a `tick` to itself
so it gets another turn. So messages are delivered both ways hive delivers them: by a turn's
claim (the wake-up) and by `recv`.

The faults. A seeded RNG (the seed is printed; `HIVE_FAULTS_SEED` replays one) picks how many
model requests to let through before each SIGKILL, plus a random delay, so the kills land
anywhere: mid-send, mid-recv, mid-claim, between turns, while the restarted daemon starts up.
Only the hive-c0re process is killed (not its process group): its claude children must die by
their parent-death signal, and the test checks they do. hive-c0re is then restarted on the same
state dir and the same Temporal, which retries the interrupted turns.

What "delivered" means. Delivery is the store's claim: the transaction that sets a row's
`delivered_at` (with the claiming `turn_id` for a turn, `<turn_id>/recv` for a `recv` during a
turn, none for a `recv` outside one). A turn attempt is a unit: a turn retried after a crash
runs claude again on the message it had claimed, and whatever the killed attempt popped with
`recv` goes back to the inbox, so the model may see one wake-up prompt, or one `recv` result,
twice; that is the documented contract (nothing lost; inside a crashed attempt delivery is at
least once and the model's side effects may repeat). So the test asserts
  - on the store: every planned message is stored exactly once and delivered, nothing pending,
    every "go" claimed by a turn;
  - on what the model saw: no message reached two agents (a `recv` result only its recipient,
    again only after a kill; a wake-up prompt only by its recipient, repeated only by retries of
    its turn), every message the model saw as a wake-up is a turn claim and every one it saw as
    a `recv` result is a `recv` claim, and every stored message reached some model request,
    whether handed out by a turn's claim or by a `recv` (one popped by a claude killed before
    its next model request is handed out again to the retried attempt).
Re-sent messages are kept out of the store by the agents themselves: every batch holds only ids
of the share that are not stored yet (a careful agent checks before sending again). Only one
claude runs per agent and the killed one is gone before its retry starts, so this check is
race-free, and any duplicate row is hive's doing (e.g. a send applied twice).

Size. By default the issue's 1,000 messages with 4 kills (at most max_turn_attempts - 1, so
even a turn hit by every kill is retried, not given up on): about 4 minutes on 2 cores, within
the CI budget. `HIVE_FAULTS_QUICK=1` sends 100 with 3 kills (about a minute; at that size the
kills land before any agent has recv'd, so the put-back of recv'd messages is not exercised);
`HIVE_FAULTS_MESSAGES=N` / `HIVE_FAULTS_KILLS=K` pick any size.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
from collections import Counter, defaultdict

import pytest
import sqlalchemy as sa

from hyperhive.store.agents import MESSAGES
from tests.fakes.anthropic_api import FakeAnthropic, Reply, Text, ToolUse, tool_result_text
from tests.faults import stored_rows
from tests.rig.agent_scripts import received, recv, send, turn_view, wake_of
from tests.rig.hive_process import pids_with_cwd, wait_gone
from tests.rig.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]

AGENTS = ["a", "b", "c", "d", "e"]
BATCH = 10  # tool calls per model reply


def _size() -> tuple[int, int]:
    """(messages, kills) for this run."""
    full = os.environ.get("HIVE_FAULTS_QUICK") != "1"
    messages = int(os.environ.get("HIVE_FAULTS_MESSAGES") or (1000 if full else 100))
    # At most max_turn_attempts - 1 kills: even a turn hit by every kill is not given up on.
    kills = int(os.environ.get("HIVE_FAULTS_KILLS") or (4 if full else 3))
    return messages, kills


def _plan(total: int) -> dict[str, list[tuple[str, str]]]:
    """Each agent's share: (recipient, body) in sending order."""
    plan: dict[str, list[tuple[str, str]]] = {a: [] for a in AGENTS}
    for n in range(total):
        sender = AGENTS[n % len(AGENTS)]
        others = [a for a in AGENTS if a != sender]
        plan[sender].append((others[len(plan[sender]) % len(others)], f"m:{sender}:{n:04d}"))
    return plan


def _recv_results_in_context(fake: FakeAnthropic) -> set[str]:
    """Bodies of recv results anywhere in any conversation sent to the model (a resumed
    session carries the killed attempt's results)."""
    found = set()
    for request in fake.turn_requests():
        for message in (request.body or {}).get("messages", []):
            content = message.get("content")
            for block in content if isinstance(content, list) else []:
                got = (
                    received(tool_result_text(block))
                    if block.get("type") == "tool_result"
                    else None
                )
                if got is not None:
                    found.add(got[1])
    return found


def _tools(request) -> set[str]:
    return {tool["name"] for tool in (request.body or {}).get("tools", [])}


def _work(hive, agent: str):
    return hive.env.state_dir / "agents" / agent / "work"


class Swarm:
    """The fake model's script, and what the model saw.

    Every turn, whatever woke it, opens with one batch of the agent's share that is not stored
    yet, then drains its inbox with batches of `recv`, and ends with a `tick` to itself while
    more of its share remains (so it gets another turn even when nobody else writes to it).
    Turns stay short, so a kill interrupts many different turns rather than one long one many
    times."""

    def __init__(self, plan: dict[str, list[tuple[str, str]]], db_url: str) -> None:
        self.plan = plan
        self.engine = sa.create_engine(db_url)
        self.lock = threading.Lock()
        self.ticks = itertools.count()
        # (agent, body) of every wake-up prompt, once per model request that opened a turn.
        self.wakes: list[tuple[str, str]] = []
        # (agent, body) of every message a recv handed to the model.
        self.recvs: list[tuple[str, str]] = []

    def unsent(self, sender: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(MESSAGES.c.body).where(MESSAGES.c.sender == sender))
            stored = {row.body for row in rows}
        return [(to, body) for to, body in self.plan[sender] if body not in stored]

    def respond(self, request):
        view = turn_view(request)
        if view is None:
            return Text("(not a wake prompt)")
        agent = view.wake.agent
        new_results = [tool_result_text(block) for block in request.tool_results]
        with self.lock:
            if not view.results:
                self.wakes.append((agent, view.wake.body))
            for text in new_results:
                if (got := received(text)) is not None:
                    self.recvs.append((agent, got[1]))
        if "mcp__hive__send" not in _tools(request):
            # claude -p connects MCP servers in the background; a real model waits for them.
            return ToolUse("WaitForMcpServers", {"servers": ["hive"]})
        if all(result.startswith("ready:") for result in view.results):
            # The turn's opening: the next batch of the share, else straight to the inbox.
            if todo := self.unsent(agent):
                return Reply(*(send(to, body) for to, body in todo[:BATCH]))
            return Reply(*(recv(0) for _ in range(BATCH)))
        if (
            len(new_results) == 1
            and new_results[0].startswith("sent #")
            and f" to {agent} " in new_results[0]
        ):
            return Text("ticked; until the next turn")
        if new_results and all(text.startswith("no messages") for text in new_results):
            # Inbox drained. More of the share to send: a tick to itself, sent now that the
            # inbox is empty (so this turn does not recv it), brings the next turn.
            if self.unsent(agent):
                return send(agent, f"tick:{agent}:{next(self.ticks)}")
            return Text("inbox empty")
        return Reply(*(recv(0) for _ in range(BATCH)))


async def test_sigkill_c0re_at_random_points_loses_and_doubles_nothing(
    start_c0re, fake_model: FakeAnthropic
):
    total, kills = _size()
    seed = int(os.environ.get("HIVE_FAULTS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed {seed} (HIVE_FAULTS_SEED={seed} replays the kill points): ", end="")
    print(f"{total} messages, {kills} kills")
    rng = random.Random(seed)
    plan = _plan(total)

    hive = await start_c0re(
        agents=AGENTS,
        turn_heartbeat_timeout_s="4",
        send_rate_per_minute="100000",
        max_turns_per_hour="100000",
        max_spend_usd_per_day="100000",
    )
    swarm = Swarm(plan, hive.db_url)
    fake_model.responder = swarm.respond
    for agent in AGENTS:
        await hive.send(agent, "go")

    # The kills land within the run: each after a random number of model requests (at least
    # one per agent, so the restarted daemon gets going), all within a low estimate of the
    # requests the whole run takes (a send batch and a recv batch per BATCH messages).
    expected_requests = 2 * total // BATCH
    for k in range(kills):
        seen = len(fake_model.turn_requests())
        gap = rng.randint(len(AGENTS), max(len(AGENTS), expected_requests // (kills + 1)))
        await fake_model.wait_for_requests_async(seen + gap, timeout=300)
        await asyncio.sleep(rng.uniform(0, 1.5))  # land anywhere, not only at a request
        running = [p for a in AGENTS for p in pids_with_cwd(_work(hive, a))]
        hive.process.kill()
        assert wait_gone(running) == [], f"kill {k + 1}: claude outlived hive-c0re"
        print(f"kill {k + 1} after {seen + gap} model requests; {len(running)} turn processes died")
        await asyncio.to_thread(hive.restart)

    planned = {(sender, to, body) for sender, share in plan.items() for to, body in share}
    planned_bodies = {body for _, _, body in planned}

    def all_delivered():
        rows = stored_rows(hive)
        stored = {r.body for r in rows}
        done = planned_bodies <= stored and all(r.delivered_at for r in rows)
        return rows if done else None

    try:
        await eventually(
            lambda: asyncio.to_thread(all_delivered),
            what=f"{total} messages delivered",
            timeout=120 + total,
            interval=0.5,
        )
    except AssertionError as exc:
        rows = stored_rows(hive)
        missing = sorted(planned_bodies - {r.body for r in rows})
        waiting = [(r.id, r.sender, r.recipient, r.body[:40]) for r in rows if not r.delivered_at]
        states = {a: (await hive.status(a)).state for a in AGENTS}
        results = [
            tool_result_text(t)[:100]
            for r in fake_model.turn_requests()[-5:]
            for t in r.tool_results
        ]
        raise AssertionError(
            f"{exc}: {len(rows)} stored, {len(missing)} planned never stored {missing[:10]}, "
            f"undelivered {waiting[:20]}; agents {states}; last tool results {results}"
        ) from None
    for agent in AGENTS:
        await hive.wait_status(agent, lambda s: s.state == "idle", timeout=120)
    rows = stored_rows(hive)

    # The store: each planned message exactly once, each delivered, the wake-ups claimed.
    counts = Counter(r.body for r in rows)
    doubled = {body: n for body, n in counts.items() if n > 1 and body != "go"}
    assert not doubled, f"stored more than once: {doubled}"
    relayed = {(r.sender, r.recipient, r.body) for r in rows if r.body.startswith("m:")}
    assert relayed == planned, (
        f"missing: {sorted(planned - relayed)[:20]}; unexpected: {sorted(relayed - planned)[:20]}"
    )
    ticks = [r for r in rows if r.body.startswith("tick:")]
    assert all(r.sender == r.recipient for r in ticks)
    assert counts["go"] == len(AGENTS)
    assert len(rows) == total + len(AGENTS) + len(ticks)
    assert [r.id for r in rows if r.delivered_at is None] == []
    assert all(r.turn_id for r in rows if r.body == "go"), "every go was claimed by a turn"

    # What the model saw: one agent and one claim per message, and nothing missed.
    by_body = {r.body: r for r in rows if r.body != "go"}
    with swarm.lock:
        wakes, recvs = list(swarm.wakes), list(swarm.recvs)
    recv_counts = Counter(body for _, body in recvs)
    # A recv result seen twice: handed out again after a kill (at least once inside a crashed
    # turn attempt), so only to its recipient and only as a recv made during a turn.
    recvd_again = {b: n for b, n in recv_counts.items() if n > 1}
    wake_agents: dict[str, set[str]] = defaultdict(set)
    for agent, body in wakes:
        wake_agents[body].add(agent)
    assert wake_agents.pop("go") == set(AGENTS)
    for body, agents in wake_agents.items():
        assert agents == {by_body[body].recipient}, f"{body} woke {agents}"
        claim = by_body[body].turn_id
        assert claim and not claim.endswith("/recv"), (
            f"{body} woke a turn but was not claimed by one"
        )
    for agent, body in recvs:
        assert agent == by_body[body].recipient, f"{body} went to {agent} by recv"
        claim = by_body[body].turn_id
        assert claim is None or claim.endswith("/recv"), f"{body}: claimed by a turn and recv'd"
    for body in recvd_again:
        claim = by_body[body].turn_id
        assert claim and claim.endswith("/recv"), f"{body} recv'd twice, not during a turn"
    both = set(wake_agents) & set(recv_counts)
    assert not both, f"seen both as a wake-up and by recv: {sorted(both)[:20]}"
    # Every message reached the model: a wake-up, a recv result, or a recv result carried in a
    # resumed session. (A recv by a claude killed before its next model request is put back
    # and handed to the retried attempt.)
    in_context = _recv_results_in_context(fake_model)
    unseen = set(by_body) - set(wake_agents) - set(recv_counts) - in_context
    assert unseen == set(), (
        f"{len(unseen)} delivered in the store but never shown to the model: "
        + ", ".join(f"{b} ({by_body[b].turn_id})" for b in sorted(unseen)[:20])
    )
    retried = sum(n - 1 for n in Counter(wakes).values())
    print(
        f"{len(rows)} messages ({len(ticks)} ticks), {len(wakes)} wake-ups ({retried} retried), "
        f"{len(recvs)} recvs ({sum(n - 1 for n in recvd_again.values())} again after a kill)"
    )
    swarm.engine.dispose()


async def test_a_message_recvd_just_before_the_kill_reaches_the_retried_turn(
    start_c0re, fake_model: FakeAnthropic
):
    """One window the random kills hit, made deterministic: the turn's claude pops a message
    with recv while a second recv of the same reply long-polls, so claude is still waiting for
    its tool results when hive-c0re is killed. The retried turn resumes the session, whose
    transcript holds the finished recv result, and the popped message goes back to the inbox
    with the retry's claim (a recv during a turn is part of the attempt: at least once), so it
    is handed out again, here as the wake-up of the next turn."""
    openings = 0

    def respond(request):
        nonlocal openings
        view = turn_view(request)
        if view is None:
            return Text("(not a wake prompt)")
        if "mcp__hive__send" not in _tools(request):
            return ToolUse("WaitForMcpServers", {"servers": ["hive"]})
        if all(result.startswith("ready:") for result in view.results):
            openings += 1
            return Reply(recv(0), recv(30)) if openings == 1 else Text("done")
        return Text("done")

    fake_model.responder = respond
    hive = await start_c0re(agents=["a"], turn_heartbeat_timeout_s="3")
    await hive.send("a", "first")
    await hive.send("a", "second")

    def second_popped():
        return any(r.body == "second" and r.delivered_at for r in stored_rows(hive))

    await eventually(
        lambda: asyncio.to_thread(second_popped),
        what="recv to pop the second message",
        timeout=90,
        interval=0.5,
    )
    running = pids_with_cwd(_work(hive, "a"))
    hive.process.kill()
    assert wait_gone(running) == []
    await asyncio.to_thread(hive.restart)

    def both_claimed():
        rows = stored_rows(hive)
        return len(rows) == 2 and all(r.delivered_at for r in rows)

    await eventually(
        lambda: asyncio.to_thread(both_claimed),
        what="both messages delivered",
        timeout=120,
        interval=0.5,
    )
    await hive.wait_status("a", lambda s: s.turns_total >= 1 and s.state == "idle", timeout=120)

    seen = _recv_results_in_context(fake_model) | {
        w.body for r in fake_model.turn_requests() if (w := wake_of(r)) is not None
    }
    assert "second" in seen, "'second' is marked delivered but no model request ever held it"
    rows = stored_rows(hive)
    assert sorted(r.body for r in rows) == ["first", "second"]
    assert all(r.delivered_at for r in rows)
