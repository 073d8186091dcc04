"""ApplyCommitWorkflow (`hive-apply-<name>-<sha12>`): approve a config commit, then deploy it."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.lifecycle import LifecycleActivities
    from activities.repos import RepoActivities
    from hyperhive.domain import MANAGER_NAME, OPERATOR_NAME, ApprovalKind, ApprovalStatus
    from hyperhive.models import ApplyRequest, DeployedRecord, LifecycleOutcome, NewApproval
    from hyperhive.repo_models import ApplyInput, CommitRef, RevertInput

from workflows.approval_gate import ApprovalGate
from workflows.spawn import failure_text


@workflow.defn(name="ApplyCommitWorkflow")
class ApplyCommitWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: ApplyRequest) -> None:
        self.decision = None
        self.host_queue = request.host_task_queue
        self.gated = True

    @workflow.run
    async def run(self, request: ApplyRequest) -> LifecycleOutcome:
        name, sha = request.name, request.sha
        short = sha[:12]
        try:
            check = await self.host(RepoActivities.validate_commit, CommitRef(agent=name, sha=sha))
        except ActivityError as err:
            detail = failure_text(err)
            await self._tell_manager(request, f"commit {short} of {name} is refused: {detail}")
            return LifecycleOutcome(status="failed", detail=detail)
        what = f"apply {short} to {name}"
        approval_id, refused = await self.seek_approval(
            NewApproval(
                kind=ApprovalKind.APPLY_COMMIT.value,
                agent=name,
                requester=request.requester,
                description=f"{what}: {request.description}",
                workflow_id=workflow.info().workflow_id,
                diff=check.diff,
            ),
            request.timing,
            announce=lambda approval_id: (
                f"{request.requester} asks to apply commit {short} to {name} "
                f"({', '.join(check.files) or 'no changes'}): {request.description}\n"
                f"Approve with `hive approve {approval_id}` (or on the dashboard)."
            ),
            announce_about=request.requester if request.requester != OPERATOR_NAME else name,
            what=what,
            subject=what,
            tell_requester=lambda body: self._tell_manager(request, body),
        )
        if refused is not None:
            return refused
        assert self.decision is not None

        previous = await self.host(RepoActivities.applied_head, name)
        applied = await self.host(
            RepoActivities.apply_commit, ApplyInput(agent=name, sha=sha, approver=self.decision.by)
        )
        try:
            await self.build(
                LifecycleActivities.container_update, name, timeout_s=request.build_timeout_s
            )
        except ActivityError as err:
            detail = failure_text(err)
            await self.host(RepoActivities.revert_applied, RevertInput(agent=name, to_sha=previous))
            await self.mark(approval_id, ApprovalStatus.FAILED.value, by=None, note=detail)
            await self._tell_manager(
                request, f"{what} failed: the container did not update ({detail}); reverted."
            )
            return LifecycleOutcome(status="failed", approval_id=approval_id, detail=detail)
        await self.host(LifecycleActivities.record_deployed, DeployedRecord(name=name, sha=sha))
        await self._tell_manager(request, f"{what} is deployed (applied commit {applied}).")
        return LifecycleOutcome(status="done", approval_id=approval_id, deployed_sha=sha)

    async def _tell_manager(self, request: ApplyRequest, body: str) -> None:
        to = request.requester if request.requester != OPERATOR_NAME else OPERATOR_NAME
        await self.tell(to or MANAGER_NAME, body, about=request.name)
