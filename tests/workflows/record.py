"""Record workflow histories for the replay tests from real runs on a dev server.

    .venv/bin/python -m tests.workflows.record [NAME …]

NAMEs (e.g. `agent_resumes_session`, `health_check`, `spawn_approved`: the lifecycle scenarios
are in record_lifecycle.py) record only those; none records them all. Each scenario runs the real
workflow code (activities replaced by name, as in the workflow tests) and writes
tests/workflows/histories/<name>.json. Re-record only for a deliberate, compatible change; keep
old histories so live runs of older code keep replaying.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hyperhive.models import AgentStatus, HealthCheckInput, StoreHealth
from tests.workflows.record_lifecycle import LIFECYCLE, record_lifecycle
from tests.workflows.test_agent_workflow import ScriptedHost, agent_loop, wait_status
from workflows.agent import AgentWorkflow
from workflows.health_check import HealthCheckWorkflow

OUT = Path(__file__).parent / "histories"

AgentHandle = WorkflowHandle[AgentWorkflow, AgentStatus]
Step = Callable[[AgentHandle, ScriptedHost], Awaitable[object]]


def until(check: Callable[[AgentStatus], bool]) -> Step:
    return lambda handle, host: wait_status(handle, check)


def state(name: str) -> Step:
    return until(lambda s: s.state == name)


def idle_after(turns: int) -> Step:
    return until(lambda s: s.turns_total == turns and s.state == "idle")


def send(signal: Callable[[AgentWorkflow], None]) -> Step:
    return lambda handle, host: handle.signal(signal)


def turn_started(handle: AgentHandle, host: ScriptedHost) -> Awaitable[object]:
    return asyncio.wait_for(host.turn_started.wait(), 30)


@dataclass
class Scenario:
    inbox: list[int]
    steps: list[Step]  # then a `stop` signal ends the workflow
    outcomes: list[object] = field(default_factory=list)  # run_turn's answers, in order
    limits: dict[str, Any] = field(default_factory=dict)
    hang: bool = False  # run_turn heartbeats forever once it has claimed a message
    last_session: str = ""  # what last_session_id answers (a new run resumes that session)


LOGGED_OUT = {"error_class": "needs_login", "error_message": "Not logged in"}

# agent_<name>.json; a scenario that continues-as-new writes its first and its final run.
SCENARIOS = {
    "three_messages": Scenario([1, 2, 3], [idle_after(3)], outcomes=[{"cost_usd": 0.25}] * 3),
    "needs_login": Scenario(
        [7],
        [state("needs_login"), send(AgentWorkflow.credentials_updated), idle_after(1)],
        outcomes=[LOGGED_OUT],
    ),
    "rate_limited": Scenario(
        [5], [idle_after(1)], outcomes=[{"error_class": "rate_limited", "retry_after_s": 1}]
    ),
    "over_budget": Scenario(
        [1, 2, 3],
        [state("over_budget"), send(AgentWorkflow.resume), idle_after(3)],
        limits={"max_turns_per_hour": 2},
    ),
    "continue_as_new": Scenario([1, 2, 3], [idle_after(3)], limits={"turns_per_run": 2}),
    "cancel_turn": Scenario(
        [11, 12], [turn_started, send(AgentWorkflow.cancel_turn), state("paused")], hang=True
    ),
    # Recorded with the `agent-resume-last-session` patch: a new run looks its session up.
    "resumes_session": Scenario(
        [1, 2], [idle_after(2)], last_session="6f1c2a4e-8d3b-4f5a-9c7e-2b1d0e9f8a76"
    ),
}


def write(name: str, history: WorkflowHistory) -> None:
    target = OUT / f"{name}.json"
    target.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print(f"wrote {target}")


@activity.defn(name="check_store")
async def check_store() -> StoreHealth:
    return StoreHealth(ok=True, schema_version=1)


async def record_health_check(env: WorkflowEnvironment) -> None:
    async with (
        Worker(env.client, task_queue="hive-core", workflows=[HealthCheckWorkflow]),
        Worker(env.client, task_queue="hive-host-local", activities=[check_store]),
    ):
        handle = await env.client.start_workflow(
            HealthCheckWorkflow.run,
            HealthCheckInput(host_task_queue="hive-host-local"),
            id="hive-health-recorded",
            task_queue="hive-core",
        )
        await handle.result()
        write("health_check", await handle.fetch_history())


async def record_agent(env: WorkflowEnvironment, name: str, scenario: Scenario) -> None:
    host = ScriptedHost(
        inbox=deque(scenario.inbox),
        outcomes=deque(scenario.outcomes),
        hang=asyncio.Event() if scenario.hang else None,
        last_session=scenario.last_session,
    )
    async with agent_loop(env, f"record-{name}", host, **scenario.limits) as handle:
        for step in scenario.steps:
            await step(handle, host)
        await handle.signal(AgentWorkflow.stop)
        await handle.result()
        final = await handle.fetch_history()
        description = await handle.describe()
    first_run_id = description.raw_description.workflow_execution_info.first_run_id
    if description.run_id == first_run_id:
        write(f"agent_{name}", final)
    else:
        first = env.client.get_workflow_handle(handle.id, run_id=first_run_id)
        write(f"agent_{name}_first", await first.fetch_history())
        write(f"agent_{name}_final", final)


async def record(only: set[str]) -> None:
    def wanted(name: str) -> bool:
        return not only or name in only or f"agent_{name}" in only

    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=[SearchAttributeKey.for_keyword("HiveAgent")],
    )
    try:
        OUT.mkdir(exist_ok=True)
        if wanted("health_check"):
            await record_health_check(env)
        for name, scenario in SCENARIOS.items():
            if wanted(name):
                await record_agent(env, name, scenario)
        for name in LIFECYCLE:
            if wanted(name):
                for out, history in (await record_lifecycle(env, name)).items():
                    write(out, history)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    names = set(sys.argv[1:])
    known = {"health_check", *LIFECYCLE, *SCENARIOS, *(f"agent_{name}" for name in SCENARIOS)}
    if unknown := names - known:
        # Else a misspelt name would record nothing, silently.
        sys.exit(f"no scenario {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    asyncio.run(record(names))
