"""Start HealthCheckWorkflow and wait for it: one trip through both task queues and the store."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from hyperhive.models import HealthCheckInput, HealthCheckResult
from hyperhive.settings import HiveSettings
from hyperhive.temporal_ids import health_workflow_id
from workflows.health_check import HealthCheckWorkflow


async def run_health_check(
    client: Client, settings: HiveSettings, *, within: timedelta
) -> HealthCheckResult:
    return await client.execute_workflow(
        HealthCheckWorkflow.run,
        HealthCheckInput(host_task_queue=settings.host_task_queue),
        id=health_workflow_id(),
        task_queue=settings.core_task_queue,
        execution_timeout=within,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
