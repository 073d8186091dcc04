"""AutoUpdateWorkflow: bring every container whose hyperhive revision is stale up to date.

Started by the Temporal Schedule `hive-auto-update` (and once at daemon start). No approval: the
agent's own config does not change, only the hyperhive it is built with.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from hyperhive.models import AutoUpdateRequest, AutoUpdateResult, DeployedRecord
    from hyperhive.repo_models import RevInput

from workflows.approval_gate import ApprovalGate
from workflows.spawn import failure_text


@workflow.defn(name="AutoUpdateWorkflow")
class AutoUpdateWorkflow(ApprovalGate):
    @workflow.init
    def __init__(self, request: AutoUpdateRequest) -> None:
        self.host_queue = request.host_task_queue

    @workflow.run
    async def run(self, request: AutoUpdateRequest) -> AutoUpdateResult:
        rev = str(await self.host("hyperhive_revision", result_type=str))
        stale = await self.host("stale_agents", rev, result_type=list[str])
        assert isinstance(stale, list)
        result = AutoUpdateResult(current_rev=rev)
        slots = asyncio.Semaphore(max(1, request.concurrency))

        async def update(name: str) -> None:
            async with slots:
                try:
                    await self.host("set_recorded_rev", RevInput(agent=name, rev=rev))
                    await self.build("container_update", name, timeout_s=request.build_timeout_s)
                    await self.host("record_deployed", DeployedRecord(name=name, hyperhive_rev=rev))
                    result.updated.append(name)
                except ActivityError as err:
                    result.failed[name] = failure_text(err)

        await asyncio.gather(*(update(name) for name in stale))
        result.updated.sort()
        return result
