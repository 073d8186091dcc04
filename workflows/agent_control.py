"""KillWorkflow (`hive-kill-<name>`) and StartWorkflow (`hive-start-<name>`): no approval needed.

Kill stops the turn loop (pending messages stay in the store) and the container; destroy also
removes the container, keeping repos, credentials and history.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.lifecycle import LifecycleActivities
    from hyperhive.domain import AgentState
    from hyperhive.models import AgentStateChange, KillRequest, LifecycleOutcome, StartRequest

from workflows.approval_gate import ApprovalGate


@workflow.defn(name="KillWorkflow")
class KillWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: KillRequest) -> None:
        self.host_queue = request.host_task_queue

    @workflow.run
    async def run(self, request: KillRequest) -> LifecycleOutcome:
        await self.host(LifecycleActivities.stop_agent_loop, request.name)
        await self.host(LifecycleActivities.container_stop, request.name)
        if request.destroy:
            await self.host(LifecycleActivities.container_destroy, request.name)
        await self.host(
            AgentActivities.set_agent_state,
            AgentStateChange(agent=request.name, state=AgentState.STOPPED.value),
        )
        verb = "destroyed" if request.destroy else "stopped"
        return LifecycleOutcome(status="done", detail=f"{request.name} {verb} by {request.by}")


@workflow.defn(name="StartWorkflow")
class StartWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: StartRequest) -> None:
        self.host_queue = request.host_task_queue

    @workflow.run
    async def run(self, request: StartRequest) -> LifecycleOutcome:
        if request.restart:
            await self.host(LifecycleActivities.stop_agent_loop, request.name)
            await self.host(LifecycleActivities.container_stop, request.name)
        await self.host(LifecycleActivities.container_start, request.name)
        await self.host(
            AgentActivities.set_agent_state,
            AgentStateChange(agent=request.name, state=AgentState.IDLE.value),
        )
        await self.host(LifecycleActivities.wake_agent, request.name)
        verb = "restarted" if request.restart else "started"
        return LifecycleOutcome(status="done", detail=f"{request.name} {verb} by {request.by}")
