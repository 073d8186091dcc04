"""HealthCheckWorkflow: proves the whole loop works (server, both task queues, the store)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.store import StoreActivities
    from hyperhive.models import HealthCheckInput, HealthCheckResult


@workflow.defn(name="HealthCheckWorkflow")
class HealthCheckWorkflow:
    @workflow.run
    async def run(self, check: HealthCheckInput) -> HealthCheckResult:
        store = await workflow.execute_activity_method(
            StoreActivities.check_store,
            task_queue=check.host_task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            # A health check reports the state now; retrying would hide a broken store.
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return HealthCheckResult(store=store, checked_at=workflow.now())
