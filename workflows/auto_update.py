"""AutoUpdateWorkflow: bring every container whose hyperhive revision is stale up to date.

Started by the Temporal Schedule `hive-auto-update` (and once at daemon start). No approval: the
agent's own config does not change, only the hyperhive it is built with. Each agent's update is
its own child workflow, `AgentUpdateWorkflow` (`hive-update-<name>`), carrying `HiveAgent`, so
it shows in the agent's history beside its spawns and applies.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.lifecycle import LifecycleActivities
    from activities.repos import RepoActivities
    from hyperhive.models import (
        AgentUpdateRequest,
        AutoUpdateRequest,
        AutoUpdateResult,
        DeployedRecord,
    )
    from hyperhive.repo_models import RevInput
    from hyperhive.temporal_ids import agent_search_attributes, update_workflow_id

from workflows.approval_gate import ApprovalGate
from workflows.spawn import failure_text

# Runs started before each agent's update was a child workflow did the activities inline.
PER_AGENT_WORKFLOWS_PATCH = "auto-update-per-agent-workflows"


@workflow.defn(name="AgentUpdateWorkflow")
class AgentUpdateWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: AgentUpdateRequest) -> None:
        self.host_queue = request.host_task_queue

    @workflow.run
    async def run(self, request: AgentUpdateRequest) -> None:
        await rebuild(self, request)


async def rebuild(gate: ApprovalGate, request: AgentUpdateRequest) -> None:
    """Record the new revision first (a crash mid-build finds the agent still stale)."""
    name, rev = request.name, request.rev
    await gate.host(RepoActivities.set_recorded_rev, RevInput(agent=name, rev=rev))
    await gate.build(LifecycleActivities.container_update, name, timeout_s=request.build_timeout_s)
    await gate.host(
        LifecycleActivities.record_deployed, DeployedRecord(name=name, hyperhive_rev=rev)
    )


@workflow.defn(name="AutoUpdateWorkflow")
class AutoUpdateWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: AutoUpdateRequest) -> None:
        self.host_queue = request.host_task_queue

    @workflow.run
    async def run(self, request: AutoUpdateRequest) -> AutoUpdateResult:
        rev = await self.host(LifecycleActivities.hyperhive_revision)
        stale = await self.host(LifecycleActivities.stale_agents, rev)
        result = AutoUpdateResult(current_rev=rev)
        slots = asyncio.Semaphore(max(1, request.concurrency))

        async def update(name: str) -> None:
            async with slots:
                one = AgentUpdateRequest(
                    name=name,
                    rev=rev,
                    host_task_queue=request.host_task_queue,
                    build_timeout_s=request.build_timeout_s,
                )
                try:
                    if workflow.patched(PER_AGENT_WORKFLOWS_PATCH):
                        await workflow.execute_child_workflow(
                            AgentUpdateWorkflow.run,
                            one,
                            id=update_workflow_id(name),
                            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                            search_attributes=agent_search_attributes(name),
                        )
                    else:
                        await rebuild(self, one)
                    result.updated.append(name)
                except (ActivityError, ChildWorkflowError) as err:
                    result.failed[name] = failure_text(err)

        await asyncio.gather(*(update(name) for name in stale))
        result.updated.sort()
        return result
