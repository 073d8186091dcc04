"""AgentWorkflow (`hive-agent-<name>`): one agent's durable turn loop.

Woken by `notify` (a message arrived), it runs one turn per inbox message until the inbox is
empty. The store is the record of messages; a turn claims its message by turn id, so a retried
turn (crash, hang, rate limit, login) gets the same message back, never the next one.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.turns import TurnActivities
    from hyperhive.domain import AgentState, TurnErrorClass
    from hyperhive.models import (
        AgentLimits,
        AgentLoopState,
        AgentStateChange,
        AgentStatus,
        AgentWorkflowInput,
        OperatorNotice,
        TurnRequest,
        TurnResult,
    )
    from hyperhive.temporal_ids import HIVE_AGENT


# Waits after a 429/529 when the API gave no reset time: 30 s, 60 s, … up to 15 min.
RATE_LIMIT_BACKOFF_S = 30.0
RATE_LIMIT_BACKOFF_MAX_S = 900.0

# A new run (not a continue-as-new) resumes the agent's last claude session, looked up in the
# store, instead of starting a new one. Runs of older code started a new session: they replay.
RESUME_SESSION_PATCH = "agent-resume-last-session"

STORE_ACTIVITY_TIMEOUT = timedelta(seconds=30)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name="AgentWorkflow")
class AgentWorkflow:
    @workflow.init
    def __init__(self, inp: AgentWorkflowInput) -> None:
        self.name = inp.name
        self.limits = inp.limits
        self.host_queue = inp.host_task_queue
        self.s = inp.state or AgentLoopState()
        # A fresh run always looks at the inbox: whatever is pending after a restart is drained.
        self.wake = True
        self.stopping = False
        self.credentials_fresh = False
        self.cancel_requested = False
        self.running = False
        self.rate_limited_until: datetime | None = None
        # pause/resume arrive in handlers, which cannot run activities: the loop records them.
        self.state_dirty = False
        self.turn_handle: workflow.ActivityHandle[TurnResult] | None = None

    # -- signals -----------------------------------------------------------------------------

    @workflow.signal
    def notify(self) -> None:
        self.wake = True

    @workflow.signal
    def pause(self) -> None:
        self.s.paused = True
        self.s.pause_reason = self.s.pause_reason or "paused by the operator"
        self.state_dirty = True

    @workflow.signal
    def resume(self) -> None:
        if self.s.over_budget:
            self.s.budget_reset_at = workflow.now()
            self.s.spend_waived_usd = self._spend_today()
        self.s.paused = False
        self.s.pause_reason = ""
        self.s.over_budget = False
        self.wake = True
        self.state_dirty = True

    @workflow.signal
    def set_limits(self, limits: AgentLimits) -> None:
        """hive-c0re sends its settings' limits at start-up: a long-running loop follows a
        changed HIVE_MAX_TURNS_PER_HOUR (and the rest) from its next turn on."""
        self.limits = limits

    @workflow.signal
    def stop(self) -> None:
        self.stopping = True
        self._cancel_running_turn()

    @workflow.signal
    def credentials_updated(self) -> None:
        self.credentials_fresh = True
        self.wake = True

    @workflow.signal
    def cancel_turn(self) -> None:
        """The operator cancels the running turn: its process is killed, its message kept."""
        if self.running:
            self.cancel_requested = True
            self._cancel_running_turn()

    def _cancel_running_turn(self) -> None:
        if self.turn_handle is not None and not self.turn_handle.done():
            self.turn_handle.cancel()

    # -- query -------------------------------------------------------------------------------

    @workflow.query
    def status(self) -> AgentStatus:
        return AgentStatus(
            name=self.name,
            state=self._state().value,
            session_id=self.s.session_id,
            turns_total=self.s.turns_total,
            turns_last_hour=len(self._turns_last_hour()),
            spend_total_usd=self.s.spend_total_usd,
            spend_today_usd=self._spend_today(),
            current_turn_id=self.s.current_turn_id if self.running else "",
            pause_reason=self.s.pause_reason,
            last_error=self.s.last_error,
            last_error_class=self.s.last_error_class,
            rate_limited_until=self.rate_limited_until,
        )

    def _state(self) -> AgentState:
        if self.stopping:
            return AgentState.STOPPED
        if self.s.needs_login:
            return AgentState.NEEDS_LOGIN
        if self.s.over_budget:
            return AgentState.OVER_BUDGET
        if self.s.paused:
            return AgentState.PAUSED
        if self.rate_limited_until is not None:
            return AgentState.RATE_LIMITED
        if self.running:
            return AgentState.RUNNING
        return AgentState.IDLE

    # -- budgets -----------------------------------------------------------------------------

    def _turns_last_hour(self) -> list[datetime]:
        cutoff = workflow.now() - timedelta(hours=1)
        return [t for t in self.s.recent_turn_times if t > cutoff]

    def _spend_today(self) -> float:
        return (
            self.s.spend_day_usd if self.s.spend_day == workflow.now().date().isoformat() else 0.0
        )

    def _budget_exceeded(self) -> str:
        reset = self.s.budget_reset_at
        turns = len([t for t in self._turns_last_hour() if reset is None or t > reset])
        if turns >= self.limits.max_turns_per_hour:
            return (
                f"{self.name} ran {turns} turns in the last hour (budget "
                f"{self.limits.max_turns_per_hour}/h)"
            )
        spend = self._spend_today()
        if spend - self.s.spend_waived_usd >= self.limits.max_spend_usd_per_day:
            return (
                f"{self.name} spent ${spend:.2f} today (budget "
                f"${self.limits.max_spend_usd_per_day:.2f}/day)"
            )
        return ""

    def _account(self, result: TurnResult) -> None:
        now = workflow.now()
        today = now.date().isoformat()
        if self.s.spend_day != today:
            self.s.spend_day, self.s.spend_day_usd, self.s.spend_waived_usd = today, 0.0, 0.0
        self.s.spend_day_usd += result.cost_usd
        self.s.spend_total_usd += result.cost_usd
        self.s.turns_total += 1
        self.s.recent_turn_times = [*self._turns_last_hour(), now]

    # -- activities --------------------------------------------------------------------------

    async def _record_state(self, note: str = "") -> None:
        await workflow.execute_activity_method(
            AgentActivities.set_agent_state,
            AgentStateChange(agent=self.name, state=self._state().value, note=note),
            task_queue=self.host_queue,
            start_to_close_timeout=STORE_ACTIVITY_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def _tell_operator(self, body: str) -> None:
        await workflow.execute_activity_method(
            AgentActivities.notify_operator,
            OperatorNotice(agent=self.name, body=body),
            task_queue=self.host_queue,
            start_to_close_timeout=STORE_ACTIVITY_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def _release_message(self, turn_id: str) -> None:
        await workflow.execute_activity_method(
            TurnActivities.release_turn_message,
            turn_id,
            task_queue=self.host_queue,
            start_to_close_timeout=STORE_ACTIVITY_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def _run_turn(self, turn_id: str) -> TurnResult:
        self.running = True
        try:
            self.turn_handle = workflow.start_activity_method(
                TurnActivities.run_turn,
                TurnRequest(agent=self.name, turn_id=turn_id, session_id=self.s.session_id),
                task_queue=self.host_queue,
                start_to_close_timeout=timedelta(seconds=self.limits.turn_timeout_s),
                heartbeat_timeout=timedelta(seconds=self.limits.heartbeat_timeout_s),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=2),
                    maximum_interval=timedelta(seconds=60),
                    maximum_attempts=self.limits.max_turn_attempts,
                    non_retryable_error_types=["BadTurnRequest", "ClaudeMissing"],
                ),
            )
            return await self.turn_handle
        finally:
            self.running = False
            self.turn_handle = None

    # -- the loop ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: AgentWorkflowInput) -> AgentStatus:
        workflow.upsert_search_attributes([HIVE_AGENT.value_set(self.name)])
        if not self.s.session_id and workflow.patched(RESUME_SESSION_PATCH):
            # After a kill/start, a destroy and re-spawn or any other new run: the same
            # conversation ("" when there is none to resume, e.g. after a fresh re-spawn).
            self.s.session_id = await workflow.execute_activity_method(
                AgentActivities.last_session_id,
                self.name,
                task_queue=self.host_queue,
                start_to_close_timeout=STORE_ACTIVITY_TIMEOUT,
                retry_policy=STORE_RETRY,
            )
        if not self.s.session_id:
            self.s.session_id = str(workflow.uuid4())
        turns_this_run = 0
        while True:
            await workflow.wait_condition(
                lambda: (
                    self.stopping
                    or self.state_dirty
                    or (self.wake and not self.s.paused and not self.s.needs_login)
                )
            )
            if self.stopping:
                break
            if self.state_dirty:
                self.state_dirty = False
                # "" would keep the stored status text ("paused by the operator") beside "idle".
                await self._record_state(self.s.pause_reason or "resumed by the operator")
                continue
            exceeded = self._budget_exceeded()
            if exceeded:
                await self._enter_over_budget(exceeded)
                continue
            self.wake = False
            if not self.s.current_turn_id:
                self.s.current_turn_id = str(workflow.uuid4())
            turn_id = self.s.current_turn_id
            try:
                result = await self._run_turn(turn_id)
            except ActivityError as err:
                await self._turn_failed(turn_id, err)
                continue
            if result.no_message:
                self.s.current_turn_id = ""
            else:
                await self._turn_done(result)
                turns_this_run += 1
            if turns_this_run >= self.limits.turns_per_run or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    AgentWorkflowInput(
                        name=self.name,
                        host_task_queue=self.host_queue,
                        limits=self.limits,
                        state=self.s,
                    )
                )
        await self._record_state("stopped")
        return self.status()

    async def _turn_done(self, result: TurnResult) -> None:
        error = TurnErrorClass(result.error_class)
        if error in (TurnErrorClass.RATE_LIMITED, TurnErrorClass.OVERLOADED):
            await self._wait_out_rate_limit(result)
            return
        if error is TurnErrorClass.NEEDS_LOGIN:
            await self._wait_for_login(result)
            return
        self._account(result)
        self.s.current_turn_id = ""
        self.s.rate_limit_streak = 0
        self.s.last_error_class = error.value
        self.s.last_error = result.error_message
        # There may be more mail: look again before sleeping.
        self.wake = True

    async def _wait_out_rate_limit(self, result: TurnResult) -> None:
        """Durable sleep until the API's reset time (or a backoff), then the same turn again."""
        self._account_attempt(result)
        self.s.rate_limit_streak += 1
        backoff = min(
            RATE_LIMIT_BACKOFF_S * 2 ** (self.s.rate_limit_streak - 1), RATE_LIMIT_BACKOFF_MAX_S
        )
        wait_s = result.retry_after_s if result.retry_after_s else backoff
        self.rate_limited_until = workflow.now() + timedelta(seconds=wait_s)
        self.s.last_error_class = result.error_class
        self.s.last_error = result.error_message
        await self._record_state(f"{result.error_class}: waiting {wait_s:.0f} s")
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self.stopping, timeout=timedelta(seconds=wait_s))
        self.rate_limited_until = None
        self.wake = True  # the same turn id: the same message, retried
        if not self.stopping:
            await self._record_state("rate limit over")

    async def _wait_for_login(self, result: TurnResult) -> None:
        """No retry storm: wait for the operator to log the agent in, then rerun the same turn."""
        self._account_attempt(result)
        self.s.needs_login = True
        self.credentials_fresh = False
        self.s.last_error_class = result.error_class
        self.s.last_error = result.error_message
        await self._record_state(result.error_message)
        await self._tell_operator(
            f"{self.name} is not logged in ({result.error_message}). Log it in on its agent "
            "page; its turn resumes by itself afterwards."
        )
        await workflow.wait_condition(lambda: self.stopping or self.credentials_fresh)
        self.s.needs_login = False
        self.wake = True
        if not self.stopping:
            await self._record_state("credentials updated")

    def _account_attempt(self, result: TurnResult) -> None:
        # A failed attempt may still have cost something (a partial turn).
        self.s.spend_total_usd += result.cost_usd
        self.s.spend_day_usd += result.cost_usd

    async def _enter_over_budget(self, why: str) -> None:
        self.s.over_budget = True
        self.s.paused = True
        self.s.pause_reason = f"over budget: {why}"
        await self._record_state(self.s.pause_reason)
        await self._tell_operator(
            f"{self.name} is paused: {why}. Resume it from its agent page (or `temporal workflow "
            f"signal --workflow-id hive-agent-{self.name} --name resume`) once you are happy."
        )

    async def _turn_failed(self, turn_id: str, err: ActivityError) -> None:
        if isinstance(err.cause, CancelledError):
            # Cancelled by the operator (or a stop): the message goes back to the inbox head.
            await self._release_message(turn_id)
            self.s.current_turn_id = ""
            if self.stopping:
                return
            self.cancel_requested = False
            self.s.paused = True
            self.s.pause_reason = "turn cancelled by the operator; resume to run it again"
            await self._record_state(self.s.pause_reason)
            return
        cause = err.cause
        detail = str(cause.message if isinstance(cause, ApplicationError) else cause)
        # Out of attempts (or a failure retrying cannot fix): keep the message for later and
        # stop here rather than burn through the inbox with the same fault.
        await self._release_message(turn_id)
        self.s.current_turn_id = ""
        self.s.last_error_class = TurnErrorClass.CRASHED.value
        self.s.last_error = detail
        self.s.paused = True
        self.s.pause_reason = f"turn failed: {detail}"
        await self._record_state(self.s.pause_reason)
        await self._tell_operator(
            f"{self.name} is paused: its turn failed ({detail}). The message is back in its "
            "inbox; fix the cause, then resume the agent to run it again."
        )
