"""Workflow and activity I/O types: small pydantic models with defaults so they can grow."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class HealthCheckInput(BaseModel):
    host_task_queue: str = "hive-host-local"


class StoreHealth(BaseModel):
    ok: bool = False
    schema_version: int = 0
    detail: str = ""


class HealthCheckResult(BaseModel):
    """One round trip: Temporal → hive-core workflow → host activity → store, and back."""

    store: StoreHealth = StoreHealth()
    checked_at: datetime | None = None


class Message(BaseModel):
    """A message between agents (or the operator), as the broker hands it out."""

    id: int
    sender: str
    recipient: str
    body: str
    created_at: datetime
    delivered_at: datetime | None = None


class SendResult(BaseModel):
    id: int
    recipient: str
    # Undelivered messages now waiting for the recipient, this one included.
    pending: int = 0


class AgentInfo(BaseModel):
    """What an agent (or the dashboard) may know about one agent."""

    name: str
    state: str = "idle"
    status_text: str = ""
    pending: int = 0
    is_manager: bool = False
    container_status: str = "absent"
    deployed_sha: str | None = None
    hyperhive_rev: str | None = None
    host_id: str = "local"


class AgentLimits(BaseModel):
    """Per-agent limits, fixed when the AgentWorkflow (re)starts, from settings."""

    max_turns_per_hour: int = 60
    max_spend_usd_per_day: float = 20.0
    turn_timeout_s: float = 3600.0
    heartbeat_timeout_s: float = 30.0
    max_turn_attempts: int = 5
    turns_per_run: int = 200  # continue-as-new after this many turns


class AgentLoopState(BaseModel):
    """Everything AgentWorkflow carries across continue-as-new."""

    session_id: str = ""
    turns_total: int = 0
    spend_total_usd: float = 0.0
    spend_day: str = ""  # ISO date the day's spend belongs to
    spend_day_usd: float = 0.0
    recent_turn_times: list[datetime] = []
    paused: bool = False
    pause_reason: str = ""
    needs_login: bool = False
    over_budget: bool = False
    # Resuming an agent that went over budget waives what was counted so far.
    budget_reset_at: datetime | None = None
    spend_waived_usd: float = 0.0
    current_turn_id: str = ""
    rate_limit_streak: int = 0
    last_error: str = ""
    last_error_class: str = "none"


class AgentWorkflowInput(BaseModel):
    name: str
    host_task_queue: str = "hive-host-local"
    limits: AgentLimits = AgentLimits()
    state: AgentLoopState | None = None


class AgentStatus(BaseModel):
    """The `status` query of AgentWorkflow."""

    name: str
    state: str
    session_id: str = ""
    turns_total: int = 0
    turns_last_hour: int = 0
    spend_total_usd: float = 0.0
    spend_today_usd: float = 0.0
    current_turn_id: str = ""
    pause_reason: str = ""
    last_error: str = ""
    last_error_class: str = "none"
    rate_limited_until: datetime | None = None


class TurnRequest(BaseModel):
    agent: str
    turn_id: str
    session_id: str


class TurnResult(BaseModel):
    turn_id: str
    no_message: bool = False
    message_id: int | None = None
    session_id: str = ""
    error_class: str = "none"
    error_message: str = ""
    retry_after_s: float | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_ms: int = 0


class AgentStateChange(BaseModel):
    agent: str
    state: str
    note: str = ""


class OperatorNotice(BaseModel):
    """A message from hive-c0re itself to the operator's inbox, about an agent."""

    agent: str
    body: str


# -- lifecycle ---------------------------------------------------------------------------------


# Who decided an approval, and the note with it (the operator's surfaces say the same).
MAX_DECIDER_CHARS = 64
MAX_NOTE_CHARS = 2000


class Decision(BaseModel):
    """The `decide` update (or signal) of an approval workflow: the dashboard, `hive approve`,
    `temporal workflow update execute --name decide --input '{"approved": true, "by": "ann"}'`.

    Strict: `"yes"` is not true and a misspelt field is an error, not a default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approved: bool
    # Recorded as who decided and shown to every operator and agent: one line, no controls.
    by: Annotated[str, Field(min_length=1, max_length=MAX_DECIDER_CHARS)] = "operator"
    note: Annotated[str, Field(max_length=MAX_NOTE_CHARS)] = ""

    @field_validator("by")
    @classmethod
    def _one_plain_line(cls, by: str) -> str:
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in by):
            raise ValueError("must be one line without control characters")
        return by

    @field_validator("note")
    @classmethod
    def _no_nul(cls, note: str) -> str:
        if "\0" in note:
            raise ValueError("must not contain a NUL character")
        return note


class DecisionOutcome(BaseModel):
    """What the `decide` update answers: the decision in force on the approval."""

    approval_id: int | None
    status: str  # approved | denied
    by: str
    note: str = ""


class ApprovalTiming(BaseModel):
    expire_after_s: float = 7 * 24 * 3600.0
    remind_every_s: float = 24 * 3600.0


# HIVE_BUILD_TIMEOUT_S's default; also what workflows started before it existed get.
DEFAULT_BUILD_TIMEOUT_S = 1800.0


class SpawnRequest(BaseModel):
    name: str
    host_task_queue: str = "hive-host-local"
    purpose: str = ""
    requester: str = "operator"
    # hm1nd itself is created at start-up without an approval.
    preapproved: bool = False
    timing: ApprovalTiming = ApprovalTiming()
    # The agent existed and its container is gone (destroyed, or a failed spawn): re-create it,
    # keeping its config repos, inbox and history.
    respawn: bool = False
    # Only the operator: discard its config repos (re-written from `purpose`), its undelivered
    # messages and its claude session first. Credentials and the work dir are kept.
    fresh: bool = False
    build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S


class ApplyRequest(BaseModel):
    name: str
    host_task_queue: str = "hive-host-local"
    sha: str  # full 40-hex sha, resolved before the workflow starts
    description: str = ""
    requester: str = "hm1nd"
    timing: ApprovalTiming = ApprovalTiming()
    build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S


class KillRequest(BaseModel):
    name: str
    host_task_queue: str = "hive-host-local"
    destroy: bool = False
    by: str = "operator"


class StartRequest(BaseModel):
    name: str
    host_task_queue: str = "hive-host-local"
    restart: bool = False
    by: str = "operator"


class NewApproval(BaseModel):
    kind: str
    agent: str
    requester: str
    description: str
    workflow_id: str
    diff: str = ""
    expires_at: datetime | None = None


class ApprovalCancel(BaseModel):
    """Close the pending approval of workflow `workflow_id` as cancelled (`why`: shown to the
    operator and the requester)."""

    workflow_id: str
    why: str


class ApprovalUpdate(BaseModel):
    approval_id: int
    status: str
    by: str | None = None
    note: str = ""


class AgentMessage(BaseModel):
    """A notice from hive-c0re to an agent or the operator (sender: who it is about/for)."""

    sender: str
    to: str
    body: str


class LifecycleOutcome(BaseModel):
    """What a lifecycle workflow ended with (also its result in the Temporal UI)."""

    status: str  # approved/denied/failed/expired/done
    approval_id: int | None = None
    detail: str = ""
    deployed_sha: str | None = None


class AutoUpdateRequest(BaseModel):
    host_task_queue: str = "hive-host-local"
    concurrency: int = 4
    build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S


class AgentUpdateRequest(BaseModel):
    """One agent's part of an auto-update: rebuild its container with hyperhive `rev`."""

    name: str
    rev: str
    host_task_queue: str = "hive-host-local"
    build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S


class DeployedRecord(BaseModel):
    name: str
    sha: str | None = None
    hyperhive_rev: str | None = None
    # A re-spawn with its repos kept: the recorded deployed sha stays (it is what the applied
    # repo holds; the proposed HEAD may be a commit never approved).
    keep_sha: bool = False


class AutoUpdateResult(BaseModel):
    updated: list[str] = []
    failed: dict[str, str] = {}
    current_rev: str = ""
