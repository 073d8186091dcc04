"""SpawnWorkflow (`hive-spawn-<name>`): approval → repos + flake → container → turn loop."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from hyperhive.domain import OPERATOR_NAME, ApprovalKind, ApprovalStatus
    from hyperhive.models import DeployedRecord, LifecycleOutcome, NewApproval, SpawnRequest
    from hyperhive.repo_models import InitReposInput

from workflows.approval_gate import ApprovalGate


def failure_text(err: ActivityError) -> str:
    cause = err.cause
    return str(cause.message if isinstance(cause, ApplicationError) else cause or err)


@workflow.defn(name="SpawnWorkflow")
class SpawnWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: SpawnRequest) -> None:
        self.decision = None
        self.host_queue = request.host_task_queue

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
                    description=f"spawn {name}: {request.purpose}",
                    workflow_id=workflow.info().workflow_id,
                ),
                request.timing,
                announce=lambda approval_id: (
                    f"{request.requester} asks to spawn {name}: {request.purpose}\n"
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
            await self.host("init_agent_repos", InitReposInput(agent=name, purpose=request.purpose))
            await self.host("prepare_agent", name)
            made_container = True
            await self.host("container_create", name)
            await self.host("container_start", name)
            await self.host("record_deployed", DeployedRecord(name=name))
            await self.host("wake_agent", name)
        except ActivityError as err:
            detail = failure_text(err)
            if made_container:
                # Leave nothing half-made behind: the repos stay (they are only files).
                await self.host("container_destroy", name)
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
