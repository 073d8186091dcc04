"""Host activities of the lifecycle workflows: approvals, notices, containers, registration."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.backends import (
    BackendError,
    ContainerBackend,
    ContainerSpec,
    ContainerStatus,
)
from activities.backends.mounts import agent_mounts
from activities.heartbeat import beat_interval, heartbeating
from hyperhive import agent_flake, config_repo
from hyperhive.broker import Broker
from hyperhive.domain import ApprovalStatus
from hyperhive.models import (
    AgentMessage,
    ApprovalCancel,
    ApprovalUpdate,
    DeployedRecord,
    NewApproval,
)
from hyperhive.orphaned_approvals import close_orphaned
from hyperhive.ports import AgentLoops, AgentServing
from hyperhive.repo_git import RepoError
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import approvals as approval_store
from hyperhive.store import messages as message_store
from hyperhive.store.off_loop import StoreCalls

log = logging.getLogger(__name__)

# How often a build heartbeats (at most: a third of its heartbeat timeout if that is shorter).
# The SDK sends them on to the server batched (at most every 0.8 heartbeat timeouts); a
# cancellation comes back with a heartbeat's answer and kills the build.
BUILD_BEAT_S = 10.0
# How often stopping a turn loop heartbeats while it waits for the loop to end.
STOP_BEAT_S = 1.0


def _as_activity_error(err: BackendError) -> ApplicationError:
    """Permanent failures (backends.base.PERMANENT: a build error, a bad name or path, …) fail
    at once, so the workflow cleans up and reports; the others are retried."""
    return ApplicationError(
        str(err),
        err.kind.value,
        type="BackendError:permanent" if err.permanent else "BackendError",
        non_retryable=err.permanent,
    )


class LifecycleActivities:
    def __init__(
        self,
        settings: HiveSettings,
        engine: Engine,
        broker: Broker,
        backend: ContainerBackend,
        agents: AgentServing,
        loops: AgentLoops,
    ) -> None:
        self._loops = loops
        self._settings = settings
        self._engine = engine
        self._db = StoreCalls(engine)
        self._broker = broker
        self._backend = backend
        self._agents = agents

    # -- approvals and notices ------------------------------------------------------------------

    @activity.defn(name="create_approval")
    async def create_approval(self, new: NewApproval) -> int:
        approval_id: int = await self._db(approval_store.create_approval, new)
        return approval_id

    @activity.defn(name="update_approval")
    async def update_approval(self, update: ApprovalUpdate) -> None:
        await self._db(
            approval_store.set_approval_status,
            update.approval_id,
            ApprovalStatus(update.status),
            by=update.by,
            note=update.note,
        )

    @activity.defn(name="cancel_approval")
    async def cancel_approval(self, cancel: ApprovalCancel) -> list[int]:
        return await close_orphaned(self._engine, self._broker, cancel.workflow_id, cancel.why)

    @activity.defn(name="send_notice")
    async def send_notice(self, notice: AgentMessage) -> None:
        await self._broker.system_notice(notice.to, notice.body)

    # -- registration ---------------------------------------------------------------------------

    @activity.defn(name="prepare_agent")
    async def prepare_agent(self, name: str) -> None:
        await self._db(agent_store.register_agent, name, self._settings.host_id)
        await self._agents.ensure(name)

    @activity.defn(name="wake_agent")
    async def wake_agent(self, name: str) -> None:
        await self._loops(name)

    @activity.defn(name="stop_agent_loop")
    async def stop_agent_loop(self, name: str) -> None:
        """Signal the turn loop to stop and wait until it has: a start right after a kill must
        not reach a run that is still finishing (its wake-up would be lost)."""
        # Heartbeats are how a cancellation of this activity reaches it while it waits.
        async with heartbeating(STOP_BEAT_S):
            await self._loops.stop(name)

    @activity.defn(name="record_deployed")
    async def record_deployed(self, record: DeployedRecord) -> None:
        state = self._settings.state_path
        sha = record.sha
        if sha is None and record.keep_sha:
            sha = await self._kept_deployed_sha(record.name)
        elif sha is None:
            sha = await asyncio.to_thread(config_repo.proposed_head, state, record.name)
        rev = record.hyperhive_rev or await asyncio.to_thread(
            config_repo.recorded_rev, state, record.name
        )
        await self._db(agent_store.set_deployed, record.name, sha=sha, hyperhive_rev=rev)

    async def _kept_deployed_sha(self, name: str) -> str | None:
        """On a re-spawn with kept repos: None (keep what is recorded) when a deployed sha is
        recorded; else the proposed HEAD only if the applied repo holds its config (a spawn that
        failed before recording it), since a later proposed commit was never approved."""
        agent = await self._db(agent_store.get_agent, name)
        if agent is not None and agent.deployed_sha:
            return None
        state = self._settings.state_path
        try:
            head = await asyncio.to_thread(config_repo.proposed_head, state, name)
            differs = await asyncio.to_thread(config_repo.validate_commit, state, name, head)
        except RepoError:
            return None
        return None if differs else head

    @activity.defn(name="discard_agent_history")
    async def discard_agent_history(self, name: str) -> None:
        """A fresh re-spawn, once approved: its config repos go (SpawnWorkflow writes them anew
        from the new purpose), its undelivered messages are dropped (marked delivered, rows kept)
        and its claude sessions are removed; credentials and the work dir stay. Idempotent."""
        state = self._settings.state_path
        for repo in (config_repo.proposed_dir(state, name), config_repo.applied_dir(state, name)):
            await asyncio.to_thread(_remove_dir, state, repo)
        home = self._settings.agent_state_dir(name) / "home"
        await asyncio.to_thread(_remove_sessions, home)
        dropped: list[int] = await self._db(message_store.discard_undelivered, name)
        # Once per spawn run: a retried attempt records the same reset. (The SDK types the run
        # id optional for activities started outside a workflow, which this one never is.)
        info = activity.info()
        await self._db(
            agent_store.record_session_reset,
            name,
            info.workflow_run_id or info.activity_id,
            f"fresh re-spawn: claude conversation, config repos and {len(dropped)} undelivered "
            "message(s) discarded",
            discarded_messages=dropped,
        )
        log.info(
            "%s: fresh re-spawn discarded its repos, session and %d messages", name, len(dropped)
        )

    @activity.defn(name="hyperhive_revision")
    async def hyperhive_revision(self) -> str:
        return self._settings.hyperhive_rev or agent_flake.hyperhive_revision()

    @activity.defn(name="stale_agents")
    async def stale_agents(self, rev: str) -> list[str]:
        """This host's agents built with another hyperhive (each host updates its own)."""
        agents = await self._db(agent_store.list_agents)
        return [
            a.name
            for a in agents
            if a.host_id == self._settings.host_id
            and a.container_status != ContainerStatus.ABSENT.value
            and a.hyperhive_rev != rev
        ]

    # -- containers -----------------------------------------------------------------------------

    def _spec(self, name: str) -> ContainerSpec:
        return ContainerSpec(
            agent=name,
            flake_dir=self._settings.state_path / "applied" / name,
            mounts=agent_mounts(self._settings, name),
        )

    async def _container(self, name: str, op: Callable[[], Awaitable[None]]) -> None:
        try:
            await op()
        except BackendError as err:
            raise _as_activity_error(err) from err
        status = await self._backend.status(name)
        await self._db(agent_store.set_container_status, name, status.value)

    async def _build(self, name: str, op: Callable[[], Awaitable[None]]) -> None:
        """A container build (create, update): on NixOS minutes of Nix, silent meanwhile. It
        heartbeats throughout (the workflow bounds it with a heartbeat timeout and
        HIVE_BUILD_TIMEOUT_S); cancelled, the backend kills the build."""
        started = time.monotonic()
        async with heartbeating(beat_interval(at_most_s=BUILD_BEAT_S)):
            await self._container(name, op)
        took = time.monotonic() - started
        log.info("%s %s: built in %.0f s", activity.info().activity_type, name, took)

    @activity.defn(name="container_create")
    async def container_create(self, name: str) -> None:
        await self._build(name, lambda: self._backend.create(self._spec(name)))

    @activity.defn(name="container_start")
    async def container_start(self, name: str) -> None:
        if await self._backend.status(name) is ContainerStatus.ABSENT:
            # Recorded, so that the store says what is true and a spawn of it is accepted.
            await self._db(agent_store.set_container_status, name, ContainerStatus.ABSENT.value)
            # Retrying cannot make a container appear (destroyed, or never built).
            raise ApplicationError(
                f"{name} has no container (destroyed?): bring it back with "
                f'`hive spawn {name} --purpose "…"`',
                type="BackendError:permanent",
                non_retryable=True,
            )
        await self._container(name, lambda: self._backend.start(name))

    @activity.defn(name="container_stop")
    async def container_stop(self, name: str) -> None:
        await self._container(name, lambda: self._backend.stop(name))

    @activity.defn(name="container_update")
    async def container_update(self, name: str) -> None:
        await self._build(name, lambda: self._backend.update(self._spec(name)))

    @activity.defn(name="container_destroy")
    async def container_destroy(self, name: str) -> None:
        await self._container(name, lambda: self._backend.destroy(name))

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.create_approval,
            self.update_approval,
            self.cancel_approval,
            self.send_notice,
            self.prepare_agent,
            self.wake_agent,
            self.stop_agent_loop,
            self.record_deployed,
            self.discard_agent_history,
            self.hyperhive_revision,
            self.stale_agents,
            self.container_create,
            self.container_start,
            self.container_stop,
            self.container_update,
            self.container_destroy,
        ]


def _remove_dir(state: Path, path: Path) -> None:
    """Remove `path` (never following a symlink): renamed out of sight first, so a crash leaves
    either the whole directory or none of it."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    scratch = state / ".repo-tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=f"discarded-{path.parent.name}-{path.name}-", dir=scratch))
    os.rename(path, trash / path.name)
    shutil.rmtree(trash)


def _remove_sessions(home: Path) -> None:
    """Remove claude's session transcripts (`<home>/.claude/projects`), nothing else of .claude
    (credentials stay). The agent can write there: symlinks are removed, never followed."""
    claude = home / ".claude"
    if claude.is_symlink():
        log.warning("%s is a symlink: its sessions are left alone", claude)
        return
    projects = claude / "projects"
    if projects.is_symlink() or projects.is_file():
        projects.unlink()
    elif projects.is_dir():
        shutil.rmtree(projects)
