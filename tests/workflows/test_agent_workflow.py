"""AgentWorkflow on the time-skipping server; its activities replaced by name with a scripted host.

The host double keeps an inbox like the store does (a turn claims a message by turn id; a retried
turn id gets the same message back) and answers run_turn from a script of outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from control.waker import agent_loop_handle
from hyperhive.models import (
    AgentLimits,
    AgentStateChange,
    AgentStatus,
    AgentWorkflowInput,
    OperatorNotice,
    TurnRequest,
    TurnResult,
)
from tests.rig.polling import eventually
from workflows.agent import AgentWorkflow


@dataclass
class ScriptedHost:
    inbox: deque[int] = field(default_factory=deque)
    claimed: dict[str, int] = field(default_factory=dict)
    outcomes: deque[object] = field(default_factory=deque)  # TurnResult fields, or an exception
    turns: list[TurnRequest] = field(default_factory=list)
    handled: list[int] = field(default_factory=list)
    states: list[AgentStateChange] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    hang: asyncio.Event | None = None
    turn_started: asyncio.Event = field(default_factory=asyncio.Event)
    # What the store says the agent's last claude session was ("" = none), and who asked.
    last_session: str = ""
    session_lookups: list[str] = field(default_factory=list)
    # Set whenever a state is recorded or the operator told (what `told` waits on).
    reported: asyncio.Event = field(default_factory=asyncio.Event)

    async def told(self, check: Callable[[], bool], timeout: float = 30) -> None:
        """Until `check()` holds over what the loop recorded and said."""
        async with asyncio.timeout(timeout):
            while not check():
                self.reported.clear()
                await self.reported.wait()

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="run_turn")
        async def run_turn(request: TurnRequest) -> TurnResult:
            self.turns.append(request)
            if request.turn_id not in self.claimed:
                if not self.inbox:
                    return TurnResult(turn_id=request.turn_id, no_message=True)
                self.claimed[request.turn_id] = self.inbox.popleft()
            message = self.claimed[request.turn_id]
            self.turn_started.set()
            if self.hang is not None:
                while True:  # a silent claude: heartbeats keep it alive until cancelled
                    activity.heartbeat()
                    await asyncio.sleep(0.05)  # the heartbeat's pace
            outcome = self.outcomes.popleft() if self.outcomes else {}
            if isinstance(outcome, Exception):
                raise outcome
            assert isinstance(outcome, dict)
            result = TurnResult(turn_id=request.turn_id, message_id=message, **outcome)
            if result.error_class == "none":
                self.handled.append(message)
            return result

        @activity.defn(name="set_agent_state")
        async def set_agent_state(change: AgentStateChange) -> None:
            self.states.append(change)
            self.reported.set()

        @activity.defn(name="notify_operator")
        async def notify_operator(notice: OperatorNotice) -> None:
            self.notices.append(notice.body)
            self.reported.set()

        @activity.defn(name="release_turn_message")
        async def release_turn_message(turn_id: str) -> bool:
            self.released.append(turn_id)
            message = self.claimed.pop(turn_id, None)
            if message is not None:
                self.inbox.appendleft(message)
            return message is not None

        @activity.defn(name="last_session_id")
        async def last_session_id(agent: str) -> str:
            self.session_lookups.append(agent)
            return self.last_session

        return [run_turn, set_agent_state, notify_operator, release_turn_message, last_session_id]


@asynccontextmanager
async def agent_loop(
    env: WorkflowEnvironment, task_queue: str, host: ScriptedHost, **limits: object
) -> AsyncIterator[WorkflowHandle[AgentWorkflow, AgentStatus]]:
    host_queue = f"{task_queue}-host"
    async with (
        Worker(env.client, task_queue=task_queue, workflows=[AgentWorkflow]),
        Worker(env.client, task_queue=host_queue, activities=host.activities()),
    ):
        handle = await env.client.start_workflow(
            AgentWorkflow.run,
            AgentWorkflowInput(
                name="alice",
                host_task_queue=host_queue,
                limits=AgentLimits(heartbeat_timeout_s=5, **limits),
            ),
            id=f"hive-agent-alice-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        # Unpinned to a run: queries follow the workflow across continue-as-new.
        latest = agent_loop_handle(env.client, handle.id)
        try:
            yield latest
        finally:
            # A loop left running would hold an activity open on the shared time-skipping
            # server, and time stops skipping for every later test.
            with contextlib.suppress(RPCError):
                await latest.terminate("test over")


async def wait_status(handle, check, timeout: float = 90):
    last = None

    async def matched():
        nonlocal last
        try:
            last = await handle.query(AgentWorkflow.status)
        except RPCError:
            # Right after continue-as-new the time-skipping server can fail a query once
            # ("query deadline exceeded") while the new run's first task is dispatched.
            return None
        return last if check(last) else None

    return await eventually(
        matched, timeout=timeout, what=lambda: f"a status to match (last: {last})"
    )


async def test_runs_one_turn_per_message_then_idles(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque([1, 2, 3]))
    host.outcomes.extend([{"cost_usd": 0.5}, {"cost_usd": 0.25}, {"cost_usd": 0.25}])
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        status = await wait_status(handle, lambda s: s.turns_total == 3 and s.state == "idle")
        assert host.handled == [1, 2, 3]
        assert status.spend_total_usd == pytest.approx(1.0)
        # One session for the agent: every turn carries the same session id.
        assert {t.session_id for t in host.turns} == {status.session_id}
        host.inbox.append(4)
        await handle.signal(AgentWorkflow.notify)
        await wait_status(handle, lambda s: s.turns_total == 4)
        assert host.handled == [1, 2, 3, 4]


async def test_needs_login_waits_without_retrying_then_reruns_the_same_turn(
    time_skipping_server, task_queue
):
    host = ScriptedHost(inbox=deque([7]))
    host.outcomes.append({"error_class": "needs_login", "error_message": "Not logged in"})
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        await wait_status(handle, lambda s: s.state == "needs_login")
        await time_skipping_server.sleep(timedelta(hours=2))
        assert len(host.turns) == 1, "no retry storm while logged out"
        await host.told(lambda: any("not logged in" in n for n in host.notices))
        await handle.signal(AgentWorkflow.credentials_updated)
        await wait_status(handle, lambda s: s.turns_total == 1 and s.state == "idle")
        assert host.turns[1].turn_id == host.turns[0].turn_id
        assert host.handled == [7]


async def test_rate_limit_sleeps_durably_until_reset_then_retries(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque([5]))
    host.outcomes.append({"error_class": "rate_limited", "retry_after_s": 600})
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        status = await wait_status(handle, lambda s: s.state == "rate_limited")
        assert status.rate_limited_until is not None
        assert len(host.turns) == 1
        await time_skipping_server.sleep(timedelta(seconds=601))
        await wait_status(handle, lambda s: s.turns_total == 1 and s.state == "idle", timeout=60)
        assert [t.turn_id for t in host.turns[:2]] == [host.turns[0].turn_id] * 2
        assert host.handled == [5]


async def test_hung_turn_is_retried_with_the_same_turn_and_session(
    time_skipping_server, task_queue
):
    host = ScriptedHost(inbox=deque([9]))
    hung = ApplicationError("claude printed nothing: killed as hung", type="TurnHung")
    host.outcomes.extend([hung, hung, {}])
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        await wait_status(handle, lambda s: s.turns_total == 1, timeout=60)
        attempts = [t for t in host.turns if t.turn_id == host.turns[0].turn_id]
        assert len(attempts) == 3
        assert len({t.session_id for t in attempts}) == 1
        assert host.handled == [9]


async def test_turn_budget_pauses_and_tells_the_operator(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque([1, 2, 3]))
    async with agent_loop(time_skipping_server, task_queue, host, max_turns_per_hour=2) as handle:
        # The state flips before the notice's activity has run: wait for the notice itself.
        await host.told(lambda: any("2 turns in the last hour" in n for n in host.notices))
        status = await wait_status(handle, lambda s: s.state == "over_budget")
        assert status.turns_total == 2 and host.handled == [1, 2]
        await handle.signal(AgentWorkflow.resume)
        await wait_status(handle, lambda s: s.turns_total == 3)
        assert host.handled == [1, 2, 3]


async def test_a_resume_replaces_the_pause_reason_in_the_stored_status(
    time_skipping_server, task_queue
):
    host = ScriptedHost(inbox=deque())
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        await handle.signal(AgentWorkflow.pause)
        await host.told(lambda: bool(host.states) and host.states[-1].state == "paused")
        await handle.signal(AgentWorkflow.resume)
        await host.told(lambda: bool(host.states) and host.states[-1].state == "idle")
    # What `hive list` shows beside the state: never "paused by the operator" next to idle.
    assert [(c.state, c.note) for c in host.states[-2:]] == [
        ("paused", "paused by the operator"),
        ("idle", "resumed by the operator"),
    ]


async def test_limits_sent_by_hive_c0re_apply_from_the_next_turn(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque([1, 2]))
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        await wait_status(handle, lambda s: s.turns_total == 2 and s.state == "idle")
        # hive-c0re restarted with HIVE_MAX_TURNS_PER_HOUR=2: the running loop follows it.
        await handle.signal(AgentWorkflow.set_limits, AgentLimits(max_turns_per_hour=2))
        host.inbox.append(3)
        await handle.signal(AgentWorkflow.notify)
        await host.told(
            lambda: any("2 turns in the last hour (budget 2/h)" in n for n in host.notices)
        )
        status = await wait_status(handle, lambda s: s.state == "over_budget")
        assert status.turns_total == 2 and host.handled == [1, 2]


async def test_spend_budget_pauses(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque([1, 2]))
    host.outcomes.extend([{"cost_usd": 3.0}, {"cost_usd": 3.0}])
    async with agent_loop(
        time_skipping_server, task_queue, host, max_spend_usd_per_day=2.5
    ) as handle:
        status = await wait_status(handle, lambda s: s.state == "over_budget")
        assert host.handled == [1] and status.spend_today_usd == pytest.approx(3.0)
        await host.told(lambda: any("spent $3.00 today" in n for n in host.notices))


async def test_cancel_kills_the_turn_and_keeps_the_message(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque([11, 12]), hang=asyncio.Event())
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        await asyncio.wait_for(host.turn_started.wait(), 30)
        await handle.signal(AgentWorkflow.cancel_turn)
        status = await wait_status(handle, lambda s: s.state == "paused")
        assert "cancelled" in status.pause_reason
        assert host.released == [host.turns[0].turn_id]
        assert list(host.inbox) == [11, 12], "the cancelled message is back at the head"


async def test_stop_ends_the_workflow_and_records_it(time_skipping_server, task_queue):
    host = ScriptedHost()
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        # Idle after its first look at the (empty) inbox: a new run looks up its session first,
        # and is not running a turn meanwhile either.
        await wait_status(handle, lambda s: s.state == "idle" and bool(host.turns))
        await handle.signal(AgentWorkflow.stop)
        final = await handle.result()
        assert final.state == "stopped"
        assert host.states[-1].state == "stopped"


async def test_continue_as_new_carries_everything(time_skipping_server, task_queue):
    host = ScriptedHost(inbox=deque(range(1, 8)))
    host.outcomes.extend([{"cost_usd": 0.1}] * 7)
    async with agent_loop(time_skipping_server, task_queue, host, turns_per_run=3) as handle:
        status = await wait_status(handle, lambda s: s.turns_total == 7 and s.state == "idle")
        assert host.handled == list(range(1, 8))
        assert status.spend_total_usd == pytest.approx(0.7)
        assert len({t.session_id for t in host.turns}) == 1
        assert host.session_lookups == ["alice"], "only the first run looks its session up"
        runs = {t.turn_id for t in host.turns}
        assert len(runs) >= 7
        description = await handle.describe()
        assert (
            description.run_id != description.raw_description.workflow_execution_info.first_run_id
        )


async def test_a_turn_that_keeps_failing_pauses_and_keeps_its_message(
    time_skipping_server, task_queue
):
    host = ScriptedHost(inbox=deque([21, 22]))
    missing = ApplicationError("cannot start claude", type="ClaudeMissing", non_retryable=True)
    host.outcomes.append(missing)
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        status = await wait_status(handle, lambda s: s.state == "paused")
        assert "cannot start claude" in status.pause_reason
        assert len(host.turns) == 1, "a non-retryable failure is not retried"
        assert list(host.inbox) == [21, 22], "the message is kept, at the head"
        await host.told(lambda: any("is paused" in n for n in host.notices))
        await handle.signal(AgentWorkflow.resume)
        await wait_status(handle, lambda s: s.turns_total == 2 and s.state == "idle")
        assert host.handled == [21, 22]


async def test_a_new_run_resumes_the_agents_last_session(time_skipping_server, task_queue):
    """After a kill/start or a destroy and re-spawn the loop is a new run without state: it
    carries on with the agent's last claude session, as the store recorded it."""
    last = str(uuid.uuid4())
    host = ScriptedHost(inbox=deque([1, 2]), last_session=last)
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        status = await wait_status(handle, lambda s: s.turns_total == 2 and s.state == "idle")
        assert status.session_id == last
        assert [t.session_id for t in host.turns] == [last] * len(host.turns)
        assert host.session_lookups == ["alice"]


async def test_a_new_run_without_a_last_session_starts_a_new_one(time_skipping_server, task_queue):
    """No recorded turn (a new agent), or a fresh re-spawn: the lookup says "", a new session."""
    host = ScriptedHost(inbox=deque([1]))
    async with agent_loop(time_skipping_server, task_queue, host) as handle:
        status = await wait_status(handle, lambda s: s.turns_total == 1 and s.state == "idle")
        assert host.session_lookups == ["alice"]
        assert uuid.UUID(status.session_id) and host.turns[0].session_id == status.session_id
