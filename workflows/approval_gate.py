"""The approval part of lifecycle workflows: wait for a decision, remind, expire.

A decision arrives as the `settle` update (what hive-c0re's surfaces send: the caller learns the
decision in force, which is the first one, whoever sent it) or as the `decide` signal (for
`temporal workflow signal`; a signal cannot answer). Either way the first decision stands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from hyperhive.domain import OPERATOR_NAME, ApprovalStatus
    from hyperhive.models import (
        AgentMessage,
        ApprovalTiming,
        ApprovalUpdate,
        Decision,
        LifecycleOutcome,
        NewApproval,
    )

HOST_ACTIVITY_TIMEOUT = timedelta(seconds=60)
# A container build (a Nix build on NixOS) runs for minutes: it heartbeats instead, and is
# bounded by the request's build_timeout_s (HIVE_BUILD_TIMEOUT_S).
BUILD_HEARTBEAT_TIMEOUT = timedelta(seconds=60)
# A build that failed fails the same way again: tried at most this often (a lost worker or a
# flaky fetch are what a second try is for; a build error is non-retryable anyway).
BUILD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=3,
    non_retryable_error_types=["BackendError:permanent", "RepoError"],
)
HOST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["BackendError:permanent", "RepoError"],
)


class ApprovalGate:
    """Mixed into workflows that wait for a human. Deciding twice changes nothing."""

    decision: Decision | None = None
    host_queue: str = "hive-host-local"
    # Set once the wait is over (decided or expired): a decision after that changes nothing.
    closed: bool = False

    @workflow.signal
    def decide(self, decision: Decision) -> None:
        if self.decision is None:
            self.decision = decision

    @workflow.update
    def settle(self, decision: Decision) -> Decision:
        """Decide, unless decided already; return the decision in force."""
        if self.decision is None:
            self.decision = decision
        return self.decision

    @settle.validator
    def _refuse_after_expiry(self, decision: Decision) -> None:
        if self.decision is None and self.closed:
            raise ApplicationError("the approval expired before it was decided", type="Expired")

    async def host(self, activity: str, *args: object, result_type: type | None = None) -> Any:
        """Run a host activity (on this host's queue) with the lifecycle timeouts and retries."""
        return await workflow.execute_activity(
            activity,
            args=list(args),
            task_queue=self.host_queue,
            result_type=result_type,
            start_to_close_timeout=HOST_ACTIVITY_TIMEOUT,
            retry_policy=HOST_RETRY,
        )

    async def build(self, activity: str, name: str, *, timeout_s: float) -> None:
        """Run a container build activity (container_create, container_update): it heartbeats
        while it builds and may take up to `timeout_s`."""
        await workflow.execute_activity(
            activity,
            name,
            task_queue=self.host_queue,
            start_to_close_timeout=timedelta(seconds=timeout_s),
            heartbeat_timeout=BUILD_HEARTBEAT_TIMEOUT,
            retry_policy=BUILD_RETRY,
        )

    async def tell(self, to: str, body: str, *, about: str) -> None:
        """A notice from hive-c0re to `to` (an agent or the operator) about agent `about`."""
        await self.host("send_notice", AgentMessage(sender=about, to=to, body=body))

    async def mark(self, approval_id: int, status: str, *, by: str | None, note: str) -> None:
        await self.host(
            "update_approval",
            ApprovalUpdate(approval_id=approval_id, status=status, by=by, note=note),
        )

    async def await_decision(
        self, approval_id: int, timing: ApprovalTiming, *, about: str, what: str
    ) -> Decision | None:
        """The decision, or None when the approval expired. Reminds the operator meanwhile."""
        deadline = workflow.now() + timedelta(seconds=timing.expire_after_s)
        while self.decision is None:
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                self.closed = True
                return None
            try:
                await workflow.wait_condition(
                    lambda: self.decision is not None,
                    timeout=timedelta(seconds=min(timing.remind_every_s, remaining)),
                )
            except TimeoutError:
                if self.decision is None and workflow.now() < deadline:
                    await self.tell(
                        OPERATOR_NAME,
                        f"reminder: approval #{approval_id} ({what}) is still waiting. "
                        f"Approve with `hive approve {approval_id}` or deny with "
                        f"`hive deny {approval_id}`.",
                        about=about,
                    )
        self.closed = True
        return self.decision

    async def seek_approval(
        self,
        new: NewApproval,
        timing: ApprovalTiming,
        *,
        announce: Callable[[int], str],
        announce_about: str,
        what: str,
        subject: str,
        tell_requester: Callable[[str], Awaitable[None]],
    ) -> tuple[int, LifecycleOutcome | None]:
        """Store the approval, tell the operator (`announce(id)`), wait for the decision.

        Returns the approval id and, unless it was approved, the outcome to end with (the
        approval is marked and the requester told "<subject> was denied …" / "… expired")."""
        approval_id = int(await self.host("create_approval", new, result_type=int))
        await self.tell(OPERATOR_NAME, announce(approval_id), about=announce_about)
        decision = await self.await_decision(approval_id, timing, about=new.agent, what=what)
        if decision is None:
            await self.mark(approval_id, ApprovalStatus.EXPIRED.value, by=None, note="")
            await tell_requester(f"{subject} expired unapproved.")
            return approval_id, LifecycleOutcome(status="expired", approval_id=approval_id)
        if not decision.approved:
            await self.mark(
                approval_id, ApprovalStatus.DENIED.value, by=decision.by, note=decision.note
            )
            await tell_requester(
                f"{subject} was denied by {decision.by}"
                + (f": {decision.note}" if decision.note else ".")
            )
            return approval_id, LifecycleOutcome(status="denied", approval_id=approval_id)
        await self.mark(
            approval_id, ApprovalStatus.APPROVED.value, by=decision.by, note=decision.note
        )
        return approval_id, None
