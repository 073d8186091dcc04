"""Starting lifecycle workflows and deciding approvals: what the manager's tools, the CLI and
the dashboard call. Every operator path ends in the same `decide` update."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from hyperhive import config_repo
from hyperhive.domain import (
    MANAGER_NAME,
    OPERATOR_NAME,
    ApprovalStatus,
    InvalidName,
    check_agent_name,
)
from hyperhive.errors import HiveError
from hyperhive.models import (
    AgentInfo,
    ApplyRequest,
    ApprovalTiming,
    Decision,
    KillRequest,
    LifecycleOutcome,
    SpawnRequest,
    StartRequest,
)
from hyperhive.repo_git import RepoError
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.store import hosts as host_store
from hyperhive.temporal_ids import (
    agent_search_attributes,
    apply_workflow_id,
    host_task_queue,
    kill_workflow_id,
    spawn_workflow_id,
    start_workflow_id,
)
from workflows.agent_control import KillWorkflow, StartWorkflow
from workflows.apply_commit import ApplyCommitWorkflow
from workflows.approval_gate import ApprovalGate
from workflows.spawn import SpawnWorkflow

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
# A lifecycle workflow's run method: its request in, its outcome out.
LifecycleRun = Callable[[Any, RequestT], Awaitable[LifecycleOutcome]]

DECIDE_TIMEOUT_S = 30.0
MAX_PURPOSE_CHARS = 4000
# A workflow's approval is stored within moments of its start; after this long, only the store
# counts.
UNSTORED_HORIZON_S = 120.0
# A commit's description is shown in the approval and carried in its workflow's input.
MAX_DESCRIPTION_CHARS = 2000
# The store's (and the backends') container status of an agent without a container: destroyed,
# or its spawn failed.
ABSENT = "absent"
MANAGER_PURPOSE = (
    "the manager of this hive: coordinates the agents and asks the operator for new agents and "
    "config changes"
)


def destroyed_hint(name: str) -> str:
    """What to run to bring back an agent that has no container."""
    hint = (
        f'bring it back with `hive spawn {name} --purpose "…"` — its config, inbox and history '
        "are kept (add --fresh to discard them)"
    )
    if name == MANAGER_NAME:
        hint += "; or restart hive-c0re, which re-creates hm1nd by itself"
    return hint


class LifecycleError(HiveError):
    """A refused lifecycle request; nothing was started."""


def _check_text(what: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise LifecycleError(f"{what} is over {limit} characters ({len(text)})", "shorten it")
    bad = next((c for c in text if (ord(c) < 32 and c not in "\n\t") or c == "\x7f"), None)
    if bad is not None:
        raise LifecycleError(
            f"{what} contains the control character {bad!r}",
            "send plain text (newlines and tabs are fine)",
        )


def _already(approval_id: int, status: str, by: str | None) -> LifecycleError:
    return LifecycleError(
        f"approval #{approval_id} is already {status}{f' by {by}' if by else ''}",
        "nothing to do: the first decision stands",
    )


class Lifecycle:
    def __init__(self, client: Client, settings: HiveSettings, engine: Engine) -> None:
        self._client = client
        self._settings = settings
        self._engine = engine
        self._request_lock = asyncio.Lock()
        # requester → workflow id → when this process started it (loop time), until its
        # approval is stored.
        self._started: dict[str, dict[str, float]] = {}

    def _timing(self) -> ApprovalTiming:
        return ApprovalTiming(
            expire_after_s=self._settings.approval_expire_s,
            remind_every_s=self._settings.approval_remind_s,
        )

    @contextlib.asynccontextmanager
    async def _within_pending_limit(self, requester: str, workflow_id: str) -> AsyncIterator[None]:
        """An agent may not bury the operator in approvals (the operator's own are unbounded).

        Counted: its approvals stored as pending, plus the workflows this process started for
        it whose approval is not stored yet (a burst of requests outruns the workers)."""
        if requester == OPERATOR_NAME:
            yield
            return
        async with self._request_lock:
            limit = self._settings.max_pending_approvals_per_agent
            stored = await asyncio.to_thread(
                approval_store.pending_workflow_ids, self._engine, requester=requester
            )
            started = self._started.setdefault(requester, {})
            horizon = asyncio.get_running_loop().time() - UNSTORED_HORIZON_S
            for old in [w for w, at in started.items() if w in stored or at < horizon]:
                del started[old]
            waiting = len(stored | set(started))
            if waiting >= limit:
                raise LifecycleError(
                    f"{requester} already has {waiting} approvals waiting (at most {limit})",
                    "wait until the operator decides some (HIVE_MAX_PENDING_APPROVALS_PER_AGENT)",
                )
            yield
            started[workflow_id] = asyncio.get_running_loop().time()

    async def _agent(self, name: str) -> AgentInfo | None:
        return await asyncio.to_thread(agent_store.get_agent, self._engine, name)

    async def _spawn_host(self, agent: AgentInfo | None) -> str:
        """Where a spawn builds: an agent spawned again stays on its host (its repos are
        there); a new one goes to HIVE_SPAWN_HOST, or the up host with the fewest agents."""
        if agent is not None:
            return agent.host_id
        if self._settings.spawn_host:
            return self._settings.spawn_host
        return await asyncio.to_thread(
            host_store.pick_spawn_host,
            self._engine,
            here=self._settings.host_id,
            down_after_s=self._settings.host_down_after_s,
        )

    async def request_spawn(
        self, name: str, purpose: str, *, requester: str, fresh: bool = False
    ) -> str:
        """Start SpawnWorkflow (waiting for approval); returns its workflow id.

        An agent whose container is gone (destroyed, or its spawn failed) may be spawned again:
        it keeps its config repos, inbox and history unless `fresh` (the operator's only)."""
        try:
            check_agent_name(name)
        except InvalidName as e:
            raise LifecycleError(str(e), "pick another name") from None
        agent = await self._agent(name)
        if agent is None and name == MANAGER_NAME:
            raise LifecycleError(
                f"{name} is the manager: hive-c0re creates it at start-up",
                "pick another name (or set HIVE_CREATE_MANAGER=true and restart hive-c0re)",
            )
        if agent is not None and (agent.container_status != ABSENT or requester == name):
            hint = f"`hive start {name}`" if name != requester else "pick another name"
            raise LifecycleError(f"an agent named {name!r} already exists", hint)
        respawn = agent is not None
        if not purpose.strip():
            raise LifecycleError("the purpose is empty", "say what the new agent is for")
        _check_text("the purpose", purpose, MAX_PURPOSE_CHARS)
        workflow_id = spawn_workflow_id(name)
        async with self._within_pending_limit(requester, workflow_id):
            await self._start_once(
                name,
                SpawnWorkflow.run,
                SpawnRequest(
                    name=name,
                    purpose=purpose.strip(),
                    requester=requester,
                    host_task_queue=host_task_queue(await self._spawn_host(agent)),
                    timing=self._timing(),
                    build_timeout_s=self._settings.build_timeout_s,
                    respawn=respawn,
                    fresh=fresh and respawn,
                ),
                workflow_id,
                WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                LifecycleError(
                    f"a spawn of {name} is already waiting for approval", "wait for the operator"
                ),
            )
        return workflow_id

    async def ensure_manager(self, container_status: Callable[[str], Awaitable[str]]) -> None:
        """hm1nd exists from the first start-up on, without an approval; and comes back (its
        repos, inbox and history kept) at a start-up that finds its container gone, as the
        container backend (`container_status`, e.g. `backend.status`) sees it."""
        manager = await self._agent(MANAGER_NAME)
        if manager is not None and manager.host_id != self._settings.host_id:
            return  # its own host's hive-c0re looks after it
        if manager is not None:
            try:
                status = str(await container_status(MANAGER_NAME))
            except Exception as e:  # a backend that cannot say: leave hm1nd as it is
                log.warning("cannot see hm1nd's container (%s); not re-creating it", e)
                return
            if status != ABSENT:
                return
            log.warning("hm1nd has no container: re-creating it (its repos and history stay)")
        await self._client.start_workflow(
            SpawnWorkflow.run,
            SpawnRequest(
                name=MANAGER_NAME,
                purpose=MANAGER_PURPOSE,
                requester="hive-c0re",
                preapproved=True,
                host_task_queue=self._settings.host_task_queue,
                build_timeout_s=self._settings.build_timeout_s,
                respawn=manager is not None,
            ),
            id=spawn_workflow_id(MANAGER_NAME),
            task_queue=self._settings.core_task_queue,
            search_attributes=agent_search_attributes(MANAGER_NAME),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    async def request_apply_commit(
        self, name: str, sha: str, description: str, *, requester: str
    ) -> str:
        agent = await self._agent(name)
        if agent is None:
            raise LifecycleError(f"there is no agent named {name!r}", "check list_agents")
        if agent.host_id != self._settings.host_id:
            # Its config repos are on its host's disk, which this hive-c0re cannot read.
            raise LifecycleError(
                f"{name} lives on host {agent.host_id}, where its config repos are; this is "
                f"host {self._settings.host_id}",
                f"propose the commit through host {agent.host_id}'s hive-c0re (its `hive` "
                "command or an agent on that host)",
            )
        _check_text("the description", description, MAX_DESCRIPTION_CHARS)
        try:
            full = await asyncio.to_thread(
                config_repo.resolve_sha, self._settings.state_path, name, sha
            )
            # A commit that can never apply (a symlink, an extra file, …) is refused now, with
            # nothing started, rather than by the workflow after an approval round.
            await asyncio.to_thread(
                config_repo.validate_commit, self._settings.state_path, name, full
            )
        except RepoError as e:
            raise LifecycleError(e.what, e.hint) from None
        workflow_id = apply_workflow_id(name, full)
        async with self._within_pending_limit(requester, workflow_id):
            await self._start_once(
                name,
                ApplyCommitWorkflow.run,
                ApplyRequest(
                    name=name,
                    sha=full,
                    description=description,
                    requester=requester,
                    host_task_queue=host_task_queue(agent.host_id),
                    timing=self._timing(),
                    build_timeout_s=self._settings.build_timeout_s,
                ),
                workflow_id,
                WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                LifecycleError(
                    f"commit {full[:12]} of {name} was already requested", "see the approvals"
                ),
            )
        return workflow_id

    async def _start_once(
        self,
        agent: str,
        workflow: LifecycleRun[RequestT],
        request: RequestT,
        workflow_id: str,
        reuse: WorkflowIDReusePolicy,
        already: LifecycleError,
    ) -> None:
        """Start a workflow that waits for an approval; `already` when one is running."""
        try:
            await self._client.start_workflow(
                workflow,
                request,
                id=workflow_id,
                task_queue=self._settings.core_task_queue,
                id_reuse_policy=reuse,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=agent_search_attributes(agent),
            )
        except WorkflowAlreadyStartedError:
            raise already from None

    async def _host_queue(self, name: str) -> str:
        """The task queue of `name`'s host (LifecycleError when there is no such agent)."""
        agent = await self._agent(name)
        if agent is None:
            raise LifecycleError(f"there is no agent named {name!r}", "check list_agents")
        return host_task_queue(agent.host_id)

    async def _control(
        self, name: str, workflow: LifecycleRun[RequestT], request: RequestT, workflow_id: str
    ) -> LifecycleOutcome:
        """Run a kill/start workflow to its end (joining one already running for `name`)."""
        try:
            return await self._client.execute_workflow(
                workflow,
                request,
                id=workflow_id,
                task_queue=self._settings.core_task_queue,
                search_attributes=agent_search_attributes(name),
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=timedelta(minutes=10),
            )
        except WorkflowFailureError as e:
            cause = e.cause
            while cause.__cause__ is not None:
                cause = cause.__cause__
            # Each workflow class is named as its workflow type (KillWorkflow.run → KillWorkflow).
            workflow_type = workflow.__qualname__.partition(".")[0]
            raise LifecycleError(
                f"{workflow_type} for {name} failed: {getattr(cause, 'message', None) or cause}",
                f"see workflow {workflow_id} in the Temporal UI",
            ) from None

    async def kill(self, name: str, *, by: str, destroy: bool = False) -> LifecycleOutcome:
        if name == MANAGER_NAME and by == MANAGER_NAME:
            raise LifecycleError("hm1nd cannot kill itself", "ask the operator")
        request = KillRequest(
            name=name, destroy=destroy, by=by, host_task_queue=await self._host_queue(name)
        )
        return await self._control(name, KillWorkflow.run, request, kill_workflow_id(name))

    async def start(self, name: str, *, by: str, restart: bool = False) -> LifecycleOutcome:
        agent = await self._agent(name)
        if agent is None:
            raise LifecycleError(f"there is no agent named {name!r}", "check list_agents")
        if agent.container_status == ABSENT:
            # Nothing to start: refused at once, saying what brings it back.
            raise LifecycleError(
                f"{name} has no container (it was destroyed, or its spawn failed)",
                destroyed_hint(name),
            )
        request = StartRequest(
            name=name, restart=restart, by=by, host_task_queue=host_task_queue(agent.host_id)
        )
        return await self._control(name, StartWorkflow.run, request, start_workflow_id(name))

    async def decide(self, approval_id: int, decision: Decision) -> approval_store.Approval:
        """Decide approval `approval_id` through its workflow's `decide` update.

        The first decision stands: a caller whose decision lost (another approve or deny got
        there first, even at the same instant) is told, with a LifecycleError, what was decided
        and by whom; nothing is changed."""
        approval = await asyncio.to_thread(approval_store.get_approval, self._engine, approval_id)
        if approval is None:
            raise LifecycleError(f"there is no approval #{approval_id}", "see `hive approvals`")
        if approval.status != ApprovalStatus.PENDING.value:
            raise _already(approval_id, approval.status, approval.decided_by)
        handle = self._client.get_workflow_handle(approval.workflow_id)
        try:
            async with asyncio.timeout(DECIDE_TIMEOUT_S):
                # The update takes the decision as plain JSON: the workflow validates it.
                await handle.execute_update(ApprovalGate.decide, decision.model_dump(mode="json"))
        except TimeoutError:
            raise LifecycleError(
                f"the workflow of approval #{approval_id} did not answer within "
                f"{DECIDE_TIMEOUT_S:.0f} s",
                "check that hive-c0re is running (its worker runs approval workflows), then "
                "decide again",
            ) from None
        except WorkflowUpdateFailedError as e:
            # Refused by the workflow's validator: it says why (decided already, expired, …).
            cause = e.cause
            if isinstance(cause, ApplicationError) and len(cause.details) == 2:
                what, hint = cause.details
                raise LifecycleError(str(what), str(hint)) from None
            raise LifecycleError(
                getattr(cause, "message", None) or str(cause), "see `hive approvals`"
            ) from None
        except RPCError as e:
            if e.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                # Its workflow ended since the check above: most often another decision won
                # and the workflow went on to its end. Say what was decided if it was.
                now = await asyncio.to_thread(
                    approval_store.get_approval, self._engine, approval_id
                )
                if now is not None and now.status != ApprovalStatus.PENDING.value:
                    raise _already(approval_id, now.status, now.decided_by) from None
                raise LifecycleError(
                    f"the workflow of approval #{approval_id} is no longer running",
                    "request it again",
                ) from None
            raise LifecycleError(
                f"cannot reach the workflow of approval #{approval_id}: {e}",
                "check that hive-c0re and Temporal are running",
            ) from None
        return approval
