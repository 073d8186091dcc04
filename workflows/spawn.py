"""SpawnWorkflow (`hive-spawn-<name>`): approval → repos + flake → container → turn loop.

A re-spawn (`respawn`: the agent's container is gone) keeps its repos, inbox and history unless
`fresh`, which discards them (`discard_agent_history`) after the approval."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.lifecycle import LifecycleActivities
    from activities.repos import RepoActivities
    from hyperhive.domain import OPERATOR_NAME, AgentState, ApprovalKind, ApprovalStatus
    from hyperhive.models import (
        AgentStateChange,
        DeployedRecord,
        LifecycleOutcome,
        NewApproval,
        SpawnRequest,
    )
    from hyperhive.repo_models import InitReposInput

from workflows.approval_gate import ApprovalGate


def failure_text(err: BaseException) -> str:
    """What went wrong: the first application error in the chain of causes (through a child
    workflow and its activity), else the innermost cause (a timeout)."""
    cause: BaseException = err
    while not isinstance(cause, ApplicationError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause.message if isinstance(cause, FailureError) else cause)


def spawn_description(request: SpawnRequest) -> str:
    """What the approval says is asked for: a new agent, or the re-creation of one (what it
    keeps or loses comes first: lists clip long descriptions)."""
    name, purpose = request.name, request.purpose
    if not request.respawn:
        return f"spawn {name}: {purpose}"
    why = "a new container for it (it was destroyed, or its spawn failed)"
    if request.fresh:
        return (
            f"re-spawn {name} afresh, discarding its config, inbox and conversation: {purpose} — "
            f"{why}; discarded: its config repos (written anew from this purpose), its "
            "undelivered messages and its claude conversation; kept: its credentials, its work "
            "dir and the record of its past messages and turns"
        )
    return (
        f"re-spawn {name}, keeping its config, inbox and history: {purpose} — {why}; kept: "
        "its config repos (proposed and applied: the config it had, not this purpose), its "
        "undelivered messages and its history (claude conversation, messages, turn events)"
    )


@workflow.defn(name="SpawnWorkflow")
class SpawnWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: SpawnRequest) -> None:
        self.decision = None
        self.host_queue = request.host_task_queue
        self.gated = not request.preapproved

    @workflow.run
    async def run(self, request: SpawnRequest) -> LifecycleOutcome:
        name = request.name
        approval_id: int | None = None
        if not request.preapproved:
            approval_id, refused = await self.seek_approval(
                NewApproval(
                    kind=ApprovalKind.SPAWN.value,
                    agent=name,
                    requester=request.requester,
                    description=spawn_description(request),
                    workflow_id=workflow.info().workflow_id,
                ),
                request.timing,
                announce=lambda approval_id: (
                    f"{request.requester} asks to {spawn_description(request)}\n"
                    f"Approve with `hive approve {approval_id}` (or on the dashboard)."
                ),
                announce_about=request.requester if request.requester != OPERATOR_NAME else name,
                what=f"spawn {name}",
                subject=f"the spawn of {name}",
                tell_requester=lambda body: self._tell_requester(request, body),
            )
            if refused is not None:
                return refused

        made_container = False
        try:
            if request.fresh:
                # After the approval, before anything is made: the repos are then written anew.
                await self.host(LifecycleActivities.discard_agent_history, name)
            await self.host(
                RepoActivities.init_agent_repos,
                InitReposInput(agent=name, purpose=request.purpose),
            )
            await self.host(LifecycleActivities.prepare_agent, name)
            made_container = True
            await self.build(
                LifecycleActivities.container_create, name, timeout_s=request.build_timeout_s
            )
            await self.host(LifecycleActivities.container_start, name)
            await self.host(
                LifecycleActivities.record_deployed,
                DeployedRecord(name=name, keep_sha=request.respawn and not request.fresh),
            )
            if request.respawn:
                # It was stopped when destroyed: a stopped agent gets no wake-ups from sends.
                await self.host(
                    AgentActivities.set_agent_state,
                    AgentStateChange(agent=name, state=AgentState.IDLE.value),
                )
            await self.host(LifecycleActivities.wake_agent, name)
        except ActivityError as err:
            detail = failure_text(err)
            if made_container:
                # Leave nothing half-made behind: the repos stay (they are only files).
                await self.host(LifecycleActivities.container_destroy, name)
            if approval_id is not None:
                await self.mark(approval_id, ApprovalStatus.FAILED.value, by=None, note=detail)
            await self._tell_requester(request, f"the spawn of {name} failed: {detail}")
            return LifecycleOutcome(status="failed", approval_id=approval_id, detail=detail)
        await self._tell_requester(request, f"{name} is up and listening.")
        return LifecycleOutcome(status="done", approval_id=approval_id)

    async def _tell_requester(self, request: SpawnRequest, body: str) -> None:
        if request.requester == OPERATOR_NAME or request.preapproved:
            await self.tell(OPERATOR_NAME, body, about=request.name)
        else:
            await self.tell(request.requester, body, about=request.name)
