"""The approval part of lifecycle workflows: wait for a decision, remind, expire, cancel.

A decision arrives as the `decide` update (what hive-c0re's surfaces and `temporal workflow
update execute` send): its validator refuses a malformed, late or conflicting decision with the
reason and changes nothing; an accepted one returns the outcome. The `decide` signal stays for
scripts written before the update (a signal cannot answer: a refused one is only logged).
Either way the first decision stands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from activities.lifecycle import LifecycleActivities
    from hyperhive.decisions import BadDecision, parse_decision
    from hyperhive.domain import OPERATOR_NAME, ApprovalStatus
    from hyperhive.models import (
        AgentMessage,
        ApprovalCancel,
        ApprovalTiming,
        ApprovalUpdate,
        Decision,
        DecisionOutcome,
        LifecycleOutcome,
        NewApproval,
    )

SelfT = TypeVar("SelfT")
ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")

HOST_ACTIVITY_TIMEOUT = timedelta(seconds=60)
# A container build (a Nix build on NixOS) runs for minutes: it heartbeats instead, and is
# bounded by the request's build_timeout_s (HIVE_BUILD_TIMEOUT_S).
BUILD_HEARTBEAT_TIMEOUT = timedelta(seconds=60)
# A build that failed fails the same way again, so its error is non-retryable (nix retries its
# own downloads); what a second or third try is for is a lost worker (no heartbeat) or a
# container that did not reload into its new system.
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
    # Whether this workflow asks for a decision at all (kill, start, auto-update and hm1nd's own
    # spawn never do); set in the workflow's __init__.
    gated: bool = False
    approval_id: int | None = None
    # Set once the wait is over: why a decision can no longer be taken ("expired", …).
    closed: str = ""

    def _refusal(self, decision: Decision) -> tuple[str, str] | None:
        """Why `decision` cannot be taken now and what to do, or None when it can (or already
        was, identically: a retried call gets the same answer)."""
        which = f"approval #{self.approval_id}" if self.approval_id else "this approval"
        if not self.gated:
            return (
                f"workflow {workflow.info().workflow_id} has no approval to decide",
                "decide the workflow of the approval: see `hive approvals`",
            )
        if self.decision is not None:
            if self.decision == decision:
                return None
            verdict = "approved" if self.decision.approved else "denied"
            return (
                f"{which} is already {verdict} by {self.decision.by}",
                "nothing to do: the first decision stands",
            )
        if self.closed:
            return f"{which} {self.closed} before it was decided", "request it again"
        return None

    def _outcome(self) -> DecisionOutcome:
        assert self.decision is not None
        return DecisionOutcome(
            approval_id=self.approval_id,
            status=(ApprovalStatus.APPROVED if self.decision.approved else ApprovalStatus.DENIED),
            by=self.decision.by,
            note=self.decision.note,
        )

    @workflow.update(name="decide")
    def decide(self, raw: JsonValue) -> DecisionOutcome:
        """Approve or deny; returns the decision in force (the validator let only this one or
        an identical repeat through)."""
        if self.decision is None:
            self.decision = parse_decision(raw)
        return self._outcome()

    @decide.validator
    def _refuse_bad_decision(self, raw: JsonValue) -> None:
        try:
            problem = self._refusal(parse_decision(raw))
        except BadDecision as e:
            # Not retryable: the `temporal` CLI would say "retryable: true" to the operator.
            raise ApplicationError(str(e), type="BadDecision", non_retryable=True) from None
        if problem is not None:
            what, hint = problem
            # The message for `temporal` users; what and hint apart for hive's own surfaces.
            raise ApplicationError(
                f"{what} ({hint})", what, hint, type="DecisionRefused", non_retryable=True
            )

    @workflow.signal(name="decide")
    def decide_signal(self, raw: JsonValue) -> None:
        try:
            decision = parse_decision(raw)
        except BadDecision as e:
            workflow.logger.warning("decide signal ignored: %s", e)
            return
        problem = self._refusal(decision)
        if problem is not None:
            workflow.logger.warning("decide signal ignored: %s (%s)", *problem)
        elif self.decision is None:
            self.decision = decision

    @workflow.update
    def settle(self, decision: Decision) -> Decision:
        """The update hive-c0re sent before `decide` was one: kept so that histories with it
        replay. Decide unless decided already; returns the decision in force."""
        if self.decision is None:
            self.decision = decision
        return self.decision

    @settle.validator
    def _refuse_after_expiry(self, decision: Decision) -> None:
        if self.decision is None and self.closed:
            raise ApplicationError("the approval expired before it was decided", type="Expired")

    # A host activity is a method of one of the activity classes, taking nothing or one
    # argument: the overloads check that argument against the method and give back its result.
    @overload
    async def host(self, activity: Callable[[SelfT], Awaitable[ResultT]]) -> ResultT: ...

    @overload
    async def host(
        self, activity: Callable[[SelfT, ArgT], Awaitable[ResultT]], arg: ArgT, /
    ) -> ResultT: ...

    async def host(self, activity: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run a host activity (on this host's queue) with the lifecycle timeouts and retries."""
        return await workflow.execute_activity_method(
            activity,
            args=args,
            task_queue=self.host_queue,
            start_to_close_timeout=HOST_ACTIVITY_TIMEOUT,
            retry_policy=HOST_RETRY,
        )

    async def build(
        self,
        activity: Callable[[LifecycleActivities, str], Awaitable[None]],
        name: str,
        *,
        timeout_s: float,
    ) -> None:
        """Run a container build activity (container_create, container_update): it heartbeats
        while it builds and may take up to `timeout_s`."""
        await workflow.execute_activity_method(
            activity,
            name,
            task_queue=self.host_queue,
            start_to_close_timeout=timedelta(seconds=timeout_s),
            heartbeat_timeout=BUILD_HEARTBEAT_TIMEOUT,
            retry_policy=BUILD_RETRY,
        )

    async def tell(self, to: str, body: str, *, about: str) -> None:
        """A notice from hive-c0re to `to` (an agent or the operator) about agent `about`."""
        await self.host(
            LifecycleActivities.send_notice, AgentMessage(sender=about, to=to, body=body)
        )

    async def mark(self, approval_id: int, status: str, *, by: str | None, note: str) -> None:
        await self.host(
            LifecycleActivities.update_approval,
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
                self.closed = "expired"
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
        try:
            approval_id = await self.host(LifecycleActivities.create_approval, new)
            self.approval_id = approval_id
            await self.tell(OPERATOR_NAME, announce(approval_id), about=announce_about)
            decision = await self.await_decision(approval_id, timing, about=new.agent, what=what)
        except (asyncio.CancelledError, ActivityError) as err:
            if isinstance(err, ActivityError) and not isinstance(err.cause, CancelledError):
                raise
            # Cancelled from the Temporal UI or CLI while waiting: the approval must not stay
            # pending for ever. (A terminated workflow runs no code: hive-c0re's sweep of
            # orphaned approvals closes those.)
            self.closed = "was cancelled"
            await self.host(
                LifecycleActivities.cancel_approval,
                ApprovalCancel(
                    workflow_id=workflow.info().workflow_id,
                    why=f"its workflow {workflow.info().workflow_id} was cancelled in Temporal",
                ),
            )
            raise
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
