"""The `decide` update of approval workflows on the time-skipping server: what a caller of
`temporal workflow update execute --name decide` (or hive-c0re) is answered, and that a refused
decision changes nothing. Plus a cancelled approval workflow closing its approval."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from hyperhive.models import (
    ApprovalCancel,
    Decision,
    DecisionOutcome,
    KillRequest,
    LifecycleOutcome,
    SpawnRequest,
)
from tests.workflows.test_lifecycle_workflows import LifecycleHost


@contextlib.asynccontextmanager
async def spawn_waiting(
    env: WorkflowEnvironment, task_queue: str, host: LifecycleHost, **request: Any
) -> AsyncIterator[WorkflowHandle[Any, LifecycleOutcome]]:
    """A SpawnWorkflow of bob, its approval stored and waiting for a decision."""
    async with host.workers(env, task_queue) as host_queue:
        handle = await env.client.start_workflow(
            "SpawnWorkflow",
            SpawnRequest(
                name="bob",
                purpose="reviews",
                requester="hm1nd",
                host_task_queue=host_queue,
                **request,
            ),
            id=f"test-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=LifecycleOutcome,
        )
        try:
            # The operator is told once the approval is stored.
            await host.reached["send_notice"].wait()
            yield handle
        finally:
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def decide(handle: WorkflowHandle[Any, Any], decision: Any) -> DecisionOutcome:
    outcome: DecisionOutcome = await handle.execute_update(
        "decide", decision, result_type=DecisionOutcome
    )
    return outcome


async def refusal(handle: WorkflowHandle[Any, Any], decision: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await decide(handle, decision)
    return str(getattr(failed.value.cause, "message", failed.value.cause))


async def test_an_accepted_decision_returns_the_outcome(time_skipping_server, task_queue):
    host = LifecycleHost()
    async with spawn_waiting(time_skipping_server, task_queue, host) as handle:
        outcome = await decide(handle, Decision(approved=True, by="ann", note="go"))
        assert outcome == DecisionOutcome(approval_id=1, status="approved", by="ann", note="go")
        # The same call again (a retry) gets the same answer.
        assert await decide(handle, Decision(approved=True, by="ann", note="go")) == outcome
        assert (await handle.result()).status == "done"
    assert host.approvals == {1: "approved"}


async def test_a_conflicting_decision_is_refused_and_changes_nothing(
    time_skipping_server, task_queue
):
    host = LifecycleHost()
    async with spawn_waiting(time_skipping_server, task_queue, host) as handle:
        await decide(handle, Decision(approved=False, by="ann", note="not now"))
        why = await refusal(handle, Decision(approved=True, by="bea"))
        assert why == (
            "approval #1 is already denied by ann (nothing to do: the first decision stands)"
        )
        assert (await handle.result()).status == "denied"
    assert host.approvals == {1: "denied"}
    assert "container_create" not in host.names()


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({}, "approved: Field required"),  # the one field that must be there
        ({"approved": "yes"}, "approved: Input should be a valid boolean"),  # strict
        ({"approved": True, "approve": True}, "approve: Extra inputs are not permitted"),
        ({"approved": True, "by": "ann\nby: root"}, "by: Value error, must be one line"),
        ({"approved": True, "by": ""}, "by: String should have at least 1 character"),
        ([True], "the decision: Input should be a valid dictionary"),
    ],
)
async def test_a_malformed_decision_is_refused_with_the_reason(
    time_skipping_server, task_queue, payload, complaint
):
    host = LifecycleHost()
    async with spawn_waiting(time_skipping_server, task_queue, host) as handle:
        why = await refusal(handle, payload)
        assert why.startswith(f"not a decision ({complaint}"), why
        assert why.endswith(
            'send {"approved": true|false, "by": "<who decides>", "note": "<optional>"}'
        )
        # Still waiting, and a good decision still counts.
        assert (await decide(handle, {"approved": True, "by": "ann"})).status == "approved"
        assert (await handle.result()).status == "done"


async def test_a_late_decision_is_refused_while_the_approved_spawn_builds(
    time_skipping_server, task_queue
):
    host = LifecycleHost()
    building = asyncio.Event()
    host.hold["container_create"] = building
    async with spawn_waiting(time_skipping_server, task_queue, host) as handle:
        await decide(handle, Decision(approved=True, by="ann"))
        await host.reached["container_create"].wait()
        why = await refusal(handle, Decision(approved=False, by="bea", note="too late"))
        assert why == (
            "approval #1 is already approved by ann (nothing to do: the first decision stands)"
        )
        building.set()
        assert (await handle.result()).status == "done"
    assert host.approvals == {1: "approved"}


async def test_a_workflow_without_an_approval_refuses_decisions(time_skipping_server, task_queue):
    host = LifecycleHost()
    gate = asyncio.Event()
    host.hold["stop_agent_loop"] = gate
    env = time_skipping_server
    async with host.workers(env, task_queue) as host_queue:
        handle = await env.client.start_workflow(
            "KillWorkflow",
            KillRequest(name="bob", host_task_queue=host_queue),
            id=f"hive-kill-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        await host.reached["stop_agent_loop"].wait()
        why = await refusal(handle, Decision(approved=True))
        assert why == (
            f"workflow {handle.id} has no approval to decide (decide the workflow of the "
            "approval: see `hive approvals`)"
        )
        gate.set()
        await handle.result()


async def test_the_decide_signal_still_decides(time_skipping_server, task_queue):
    host = LifecycleHost()
    async with spawn_waiting(time_skipping_server, task_queue, host) as handle:
        await handle.signal("decide", Decision(approved=True, by="script"))
        await handle.signal("decide", Decision(approved=False, by="late"))  # logged, ignored
        assert (await handle.result()).status == "done"
    assert host.approvals == {1: "approved"}


async def test_cancelling_the_workflow_closes_its_approval(time_skipping_server, task_queue):
    host = LifecycleHost()
    async with spawn_waiting(time_skipping_server, task_queue, host) as handle:
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert isinstance(failed.value.cause, CancelledError)
    cancels = [ApprovalCancel.model_validate(a) for n, a in host.calls if n == "cancel_approval"]
    assert cancels == [
        ApprovalCancel(
            workflow_id=handle.id, why=f"its workflow {handle.id} was cancelled in Temporal"
        )
    ]
    assert host.approvals == {1: "cancelled"}
    assert "container_create" not in host.names()
