"""The lifecycle workflows' scenarios for `python -m tests.workflows.record` (spawn, apply-commit,
kill, start, auto-update and its per-agent child), recorded from real runs on the dev server.

The host activities are the lifecycle tests' `LifecycleHost` (replaced by name). A decision is
taken once the workflow waits for it, as a person's would be: by the `decide` update, which
hive-c0re's surfaces send, except in `spawn_denied`, which sends the `decide` signal of older
scripts, so that replay covers both handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from hyperhive.models import (
    ApplyRequest,
    AutoUpdateRequest,
    AutoUpdateResult,
    Decision,
    DecisionOutcome,
    KillRequest,
    LifecycleOutcome,
    SpawnRequest,
    StartRequest,
)
from hyperhive.temporal_ids import update_workflow_id
from tests.workflows.test_lifecycle_workflows import SHA, LifecycleHost


def ended(status: str) -> Callable[[Any], bool]:
    return lambda outcome: isinstance(outcome, LifecycleOutcome) and outcome.status == status


@dataclass
class Lifecycle:
    workflow: str
    request: BaseModel  # its host_task_queue is set to the recording's host queue
    # What the run must end with: anything else is not the scenario its name says.
    ends: Callable[[Any], bool]
    result_type: type[BaseModel] = LifecycleOutcome
    decision: Decision | None = None
    by_signal: bool = False
    stale: list[str] = field(default_factory=list)  # what stale_agents answers
    children: dict[str, str] = field(default_factory=dict)  # history name → child workflow id


APPROVED = Decision(approved=True, by="ops", note="go")

# <name>.json, and <child>.json for each child workflow.
LIFECYCLE = {
    "spawn_approved": Lifecycle(
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="tests things", requester="hm1nd"),
        ended("done"),
        decision=APPROVED,
    ),
    "spawn_denied": Lifecycle(
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="tests things", requester="hm1nd"),
        ended("denied"),
        decision=Decision(approved=False, by="ops", note="not now"),
        by_signal=True,
    ),
    "apply_commit_approved": Lifecycle(
        "ApplyCommitWorkflow",
        ApplyRequest(name="bob", sha=SHA, description="more memory", requester="hm1nd"),
        ended("done"),
        decision=APPROVED,
    ),
    "kill_destroy": Lifecycle("KillWorkflow", KillRequest(name="bob", destroy=True), ended("done")),
    "start_restart": Lifecycle(
        "StartWorkflow", StartRequest(name="bob", restart=True), ended("done")
    ),
    # Two stale agents, each updated by its child workflow; bob's child is recorded too.
    "auto_update": Lifecycle(
        "AutoUpdateWorkflow",
        AutoUpdateRequest(),
        lambda result: isinstance(result, AutoUpdateResult) and result.updated == ["bob", "eve"],
        result_type=AutoUpdateResult,
        stale=["bob", "eve"],
        children={"auto_update_child": update_workflow_id("bob")},
    ),
}


async def waiting_for_decision(handle: WorkflowHandle[Any, Any]) -> None:
    """Until the workflow waits on its reminder timer, as when a person decides: the history then
    has the timer, cancelled by the decision, that a real one has."""
    async for event in handle.fetch_history_events(wait_new_event=True):
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            return
    raise RuntimeError(f"{handle.id} ended without waiting for a decision")


async def record_lifecycle(env: WorkflowEnvironment, name: str) -> dict[str, WorkflowHistory]:
    """Run scenario `name` to its end; its history and its children's, by file name."""
    scenario = LIFECYCLE[name]
    host = LifecycleHost(stale=list(scenario.stale))
    task_queue = f"record-{name}"
    async with host.workers(env, task_queue) as host_queue:
        handle = await env.client.start_workflow(
            scenario.workflow,
            scenario.request.model_copy(update={"host_task_queue": host_queue}),
            id=f"record-{name}",
            task_queue=task_queue,
            result_type=scenario.result_type,
        )
        if scenario.decision is not None:
            await asyncio.wait_for(waiting_for_decision(handle), 30)
            if scenario.by_signal:
                await handle.signal("decide", scenario.decision)
            else:
                await handle.execute_update(
                    "decide", scenario.decision, result_type=DecisionOutcome
                )
        result = await handle.result()
        if not scenario.ends(result):
            raise RuntimeError(f"{name} ended with {result!r}: not the scenario to record")
        histories = {name: await handle.fetch_history()}
        for child, child_id in scenario.children.items():
            histories[child] = await env.client.get_workflow_handle(child_id).fetch_history()
    return histories
