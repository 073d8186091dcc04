"""What an operator can see and do, in one place: the dashboard, the agent pages and the admin
socket all call this, so a button, `hive approve 3` and a JSON line do exactly the same thing.

Every method either does what it says or raises `HiveError` (what happened, what to do), having
changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, urlencode

from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from control.runtime import CoreRuntime
from control.waker import agent_loop_handle
from hyperhive import __version__, agent_flake, config_repo
from hyperhive.agent_config import ClaudeSettingsError, effective_config, parse_claude_settings
from hyperhive.broker import BrokerError
from hyperhive.credentials import (
    CredentialKind,
    CredentialSummary,
    save_credentials,
    stored_credentials,
)
from hyperhive.domain import MANAGER_NAME, OPERATOR_NAME, ApprovalStatus
from hyperhive.errors import HiveError
from hyperhive.host_health import HostHealth, down_hosts, host_health
from hyperhive.models import (
    MAX_DECIDER_CHARS,
    MAX_NOTE_CHARS,
    Decision,
    LifecycleOutcome,
    Message,
    SendResult,
)
from hyperhive.repo_git import RepoError
from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.store import hosts as host_store
from hyperhive.store import messages as message_store
from hyperhive.store.agents import AgentOverview, TurnEvent
from hyperhive.store.approvals import Approval
from hyperhive.store.off_loop import StoreCalls
from hyperhive.temporal_ids import agent_workflow_id
from workflows.agent import AgentWorkflow

MAX_LIST = 1000


class ApprovalView(Approval):
    """An approval as the operator's surfaces show it: with a link to its workflow's history
    in the Temporal Web UI (None when there is no UI to link)."""

    workflow_url: str | None = None


class OperatorError(HiveError):
    """A refused operator request; nothing changed."""


class ControlAction(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    KILL = "kill"
    DESTROY = "destroy"


class AgentSignal(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL_TURN = "cancel_turn"


# The turn loop's signal each AgentSignal sends.
LOOP_SIGNALS: dict[AgentSignal, Callable[[AgentWorkflow], None]] = {
    AgentSignal.PAUSE: AgentWorkflow.pause,
    AgentSignal.RESUME: AgentWorkflow.resume,
    AgentSignal.CANCEL_TURN: AgentWorkflow.cancel_turn,
}


class AgentView(AgentOverview):
    stale: bool
    is_manager: bool
    page_url: str | None
    dashboard_path: str
    history_url: str | None
    # What its next turn runs with (applied settings.json over the host's defaults); model ""
    # is the CLI's default. config_problem: why its applied config cannot be used, if it cannot.
    model: str = ""
    model_from: str = "default"
    permission_mode: str = ""
    permission_mode_from: str = "default"
    config_problem: str = ""
    # Set when its applied config is on another host (its own): only that host can read it.
    config_host: str = ""
    # Its claude is running now, between turns or in one (activities/warm_claude.py): its next
    # turn starts at once. False: the next turn starts claude first (a cold start).
    warm: bool = False
    # Its host (host_id) is down (hyperhive.host_health): its state is only what it was when
    # that host was last heard of; the surfaces show `host <id> down` instead.
    host_down: bool = False


class Urls(BaseModel):
    """The operator's links; with HIVE_ACCESS_TOKEN_REQUIRED the page links carry the token (the
    admin socket, which answers this, is the admins' alone)."""

    dashboard: str
    temporal_ui: str | None
    metrics: str
    agents: dict[str, str]
    # Where scripts read the token for `Authorization: Bearer`; None = no token asked for.
    access_token_file: str | None = None


class HiveStatus(BaseModel):
    version: str
    host_id: str
    temporal: str
    namespace: str
    started_at: datetime
    workers_running: bool
    hyperhive_rev: str
    approvals_pending: int
    agents: list[AgentView]
    hosts: list[HostHealth]


def _start_of_day(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class OperatorService:
    def __init__(self, runtime: CoreRuntime) -> None:
        self._rt = runtime
        self._settings = runtime.settings
        self._db = StoreCalls(runtime.engine)
        self._rev: str | None = None

    # -- reading ---------------------------------------------------------------------------------

    async def hyperhive_rev(self) -> str:
        if self._rev is None:
            self._rev = self._settings.hyperhive_rev or await asyncio.to_thread(
                agent_flake.hyperhive_revision
            )
        return self._rev

    def history_url(self, agent: str) -> str | None:
        """The agent's workflows in the Temporal Web UI (search attribute HiveAgent): its
        spawns, applies, kills, starts and turn loop."""
        return self._workflows_url(f'HiveAgent="{agent}"')

    def _workflows_url(self, query: str) -> str | None:
        ui = self._settings.temporal_web_ui()
        if ui is None:
            return None
        namespace = quote(self._settings.temporal_namespace, safe="")
        return f"{ui}/namespaces/{namespace}/workflows?query={quote(query, safe='')}"

    def _view(self, approval: Approval) -> ApprovalView:
        # By id, not run: the store does not know the run, and the list shows every run of it.
        url = self._workflows_url(f'WorkflowId="{approval.workflow_id}"')
        return ApprovalView(**approval.model_dump(), workflow_url=url)

    def page_url(self, name: str, port: int | None) -> str | None:
        """The agent's own page, if it is served on its stored port right now (else its page
        is only at the dashboard's /agents/<name>/)."""
        if port is None or self._rt.served_page_ports.get(name) != port:
            return None
        return f"http://{self._settings.bind_host}:{port}/"

    async def hosts(self) -> list[HostHealth]:
        """Every host sharing the store (and any an agent is registered on), by id."""
        hosts = await self._db(host_store.list_hosts, down_after_s=self._settings.host_down_after_s)
        return host_health(hosts, here=self._settings.host_id, now=datetime.now(UTC))

    async def agents(self, *, hosts: list[HostHealth] | None = None) -> list[AgentView]:
        """Every agent; `hosts`: the hosts read already (status shows both from one look)."""
        rows: list[AgentOverview] = await self._db(
            agent_store.agent_overviews, since=_start_of_day(datetime.now(UTC))
        )
        down = down_hosts(
            await self.hosts() if hosts is None else hosts, here=self._settings.host_id
        )
        rev = await self.hyperhive_rev()
        configs = await asyncio.to_thread(lambda: [self._claude_config(row) for row in rows])
        warm = self._rt.warm_agents()
        return [
            AgentView(
                **row.model_dump(),
                **config,
                stale=row.container_status != "absent" and row.hyperhive_rev != rev,
                is_manager=row.name == MANAGER_NAME,
                page_url=self.page_url(row.name, row.agent_port),
                dashboard_path=f"/agents/{row.name}/",
                history_url=self.history_url(row.name),
                warm=row.name in warm,
                host_down=row.host_id in down,
            )
            for row, config in zip(rows, configs, strict=True)
        ]

    def _claude_config(self, row: AgentOverview) -> dict[str, str]:
        """The model and permission mode in force for the agent's next turn."""
        if row.host_id != self._settings.host_id:
            return {"config_host": row.host_id}
        try:
            files = config_repo.applied_claude_files(self._settings.state_path, row.name)
            settings = parse_claude_settings(files.settings)
        except (RepoError, ClaudeSettingsError) as e:
            return {"config_problem": e.what}
        config = effective_config(settings, self._rt.claude_defaults)
        return config.model_dump(
            include={"model", "model_from", "permission_mode", "permission_mode_from"}
        )

    async def agent(self, name: str) -> AgentView:
        for view in await self.agents():
            if view.name == name:
                return view
        raise OperatorError(f"there is no agent named {name!r}", "see `hive status`")

    async def approvals(self, *, pending_only: bool = False) -> list[ApprovalView]:
        rows = [self._view(a) for a in await self._db(approval_store.list_approvals)]
        if pending_only:
            rows = [r for r in rows if r.status == ApprovalStatus.PENDING.value]
        # Pending first (oldest first: they have waited longest), then decided, newest first.
        pending = sorted(
            (r for r in rows if r.status == ApprovalStatus.PENDING.value), key=lambda r: r.id
        )
        decided = sorted(
            (r for r in rows if r.status != ApprovalStatus.PENDING.value), key=lambda r: -r.id
        )
        return pending + decided

    async def pending_approval_id(self, workflow_id: str) -> int | None:
        """The approval workflow `workflow_id` waits on, once it has stored it."""
        found: int | None = await self._db(approval_store.pending_id, workflow_id)
        return found

    async def approval(self, approval_id: int) -> ApprovalView:
        row: Approval | None = await self._db(approval_store.get_approval, approval_id)
        if row is None:
            raise OperatorError(f"there is no approval #{approval_id}", "see `hive approvals`")
        return self._view(row)

    async def status(self) -> HiveStatus:
        hosts = await self.hosts()
        agents = await self.agents(hosts=hosts)
        pending = await self.approvals(pending_only=True)
        return HiveStatus(
            version=__version__,
            host_id=self._settings.host_id,
            temporal=self._settings.temporal_target,
            namespace=self._settings.temporal_namespace,
            started_at=self._rt.started_at,
            workers_running=self._rt.workers_running,
            hyperhive_rev=await self.hyperhive_rev(),
            approvals_pending=len(pending),
            agents=agents,
            hosts=hosts,
        )

    async def urls(self) -> Urls:
        base = self._settings.dashboard_url()
        token = self._rt.access_token
        entry = "" if token is None else "?" + urlencode({"token": token})
        return Urls(
            dashboard=base + "/" + entry,
            temporal_ui=self._settings.temporal_web_ui(),
            metrics=base + "/metrics",
            agents={
                a.name: (a.page_url or base + a.dashboard_path) + entry for a in await self.agents()
            },
            access_token_file=(
                None if token is None else str(self._settings.published_access_token_path)
            ),
        )

    async def messages(
        self, *, agent: str | None = None, after_id: int | None = None, limit: int = 100
    ) -> list[Message]:
        """Newest first; or, with `after_id`, those after it oldest first (a resumable feed)."""
        limit = max(1, min(limit, MAX_LIST))
        if after_id is not None:
            rows: list[Message] = await self._db(
                message_store.messages_after, after_id, limit=limit
            )
            return rows
        rows = await self._db(message_store.recent_messages, agent=agent, limit=limit)
        return rows

    async def logs(self, name: str, *, after_id: int = 0, limit: int = 200) -> list[TurnEvent]:
        await self._require_agent(name)
        events: list[TurnEvent] = await self._db(
            agent_store.turn_events,
            name,
            after_id=max(0, after_id),
            limit=max(1, min(limit, MAX_LIST)),
        )
        return events

    async def _require_agent(self, name: str, *, here: bool = False) -> None:
        """`here`: the agent must live on this host (its home dir is on this host's disk)."""
        agent = await self._db(agent_store.get_agent, name)
        if agent is None:
            raise OperatorError(f"there is no agent named {name!r}", "see `hive status`")
        if here and agent.host_id != self._settings.host_id:
            raise OperatorError(
                f"{name} lives on host {agent.host_id}; its credentials are on that host",
                f"do this on host {agent.host_id}'s dashboard or with its `hive` command",
            )

    # -- acting ----------------------------------------------------------------------------------

    async def send(self, to: str, body: str) -> SendResult:
        try:
            return await self._rt.broker.send(OPERATOR_NAME, to, body)
        except BrokerError as e:
            raise OperatorError(e.what, e.hint) from None

    async def decide(
        self, approval_id: int, *, approved: bool, by: str, note: str = ""
    ) -> Approval:
        by = by.strip() or OPERATOR_NAME
        if len(by) > MAX_DECIDER_CHARS or not by.isprintable():
            # It is recorded as who decided and shown to every operator and agent: one line of
            # plain text, never something that forges a second field or rewrites a terminal.
            raise OperatorError(
                f"who decided must be one line of at most {MAX_DECIDER_CHARS} printable "
                f"characters, got {by[:80]!r}",
                "give a plain name (e.g. your login)",
            )
        if len(note) > MAX_NOTE_CHARS:
            raise OperatorError(f"the note is over {MAX_NOTE_CHARS} characters", "shorten it")
        if "\0" in note:
            raise OperatorError("the note contains a NUL character", "send plain text")
        return await self._rt.lifecycle.decide(
            approval_id, Decision(approved=approved, by=by, note=note)
        )

    async def spawn(self, name: str, purpose: str, *, fresh: bool = False) -> str:
        return await self._rt.lifecycle.request_spawn(
            name, purpose, requester=OPERATOR_NAME, fresh=fresh
        )

    async def control(self, action: ControlAction, name: str, *, by: str) -> LifecycleOutcome:
        lifecycle = self._rt.lifecycle
        if action in (ControlAction.KILL, ControlAction.STOP, ControlAction.DESTROY):
            return await lifecycle.kill(name, by=by, destroy=action == ControlAction.DESTROY)
        return await lifecycle.start(name, by=by, restart=action == ControlAction.RESTART)

    async def signal(self, name: str, signal: AgentSignal) -> None:
        """Send pause/resume/cancel_turn to the agent's turn loop (it must be running)."""
        await self._require_agent(name)
        await self._signal_loop(name, LOOP_SIGNALS[signal])

    async def _signal_loop(self, name: str, signal: Callable[[AgentWorkflow], None]) -> None:
        handle = agent_loop_handle(self._rt.client, agent_workflow_id(name))
        try:
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                raise OperatorError(
                    f"{name}'s turn loop is not running", f"start it: `hive start {name}`"
                )
            await handle.signal(signal)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise OperatorError(
                    f"{name} has no turn loop yet", f"send it a message or `hive start {name}`"
                ) from None
            raise OperatorError(
                f"cannot reach {name}'s turn loop: {e.message}",
                "check that hive-c0re and Temporal are running",
            ) from None

    def _claude_dir(self, name: str) -> Path:
        return self._settings.agent_state_dir(name) / "home" / ".claude"

    async def credentials(self, name: str) -> CredentialSummary:
        await self._require_agent(name, here=True)
        return await asyncio.to_thread(stored_credentials, self._claude_dir(name))

    async def login(self, name: str, kind: CredentialKind, secret: str) -> CredentialSummary:
        """Store the agent's credentials (0600) and tell its turn loop (`credentials_updated`)."""
        await self._require_agent(name, here=True)
        summary = await asyncio.to_thread(save_credentials, self._claude_dir(name), kind, secret)
        # No loop running is fine: the next one starts with the new credentials anyway.
        with contextlib.suppress(OperatorError):
            await self._signal_loop(name, AgentWorkflow.credentials_updated)
        return summary
