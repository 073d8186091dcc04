"""Wakes an agent's turn loop (signal-with-start of its AgentWorkflow with `notify`), sends it
the settings' limits and stops it: every client call hive-c0re makes on the loop but the
operator's own signals (control/operator.py).

A loop started here runs its turns on the agent's host (agents.host_id), whichever host wakes
it: an agent on host B is woken by a send handled on host A."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import Engine
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from hyperhive.models import AgentLimits, AgentStatus, AgentWorkflowInput
from hyperhive.settings import HiveSettings
from hyperhive.store import hosts as host_store
from hyperhive.temporal_ids import agent_search_attributes, agent_workflow_id, host_task_queue
from workflows.agent import AgentWorkflow


def agent_limits(settings: HiveSettings) -> AgentLimits:
    return AgentLimits(
        max_turns_per_hour=settings.max_turns_per_hour,
        max_spend_usd_per_day=settings.max_spend_usd_per_day,
        turn_timeout_s=settings.turn_timeout_s,
        heartbeat_timeout_s=settings.turn_heartbeat_timeout_s,
    )


def agent_loop_handle(
    client: Client, workflow_id: str
) -> WorkflowHandle[AgentWorkflow, AgentStatus]:
    """An AgentWorkflow's handle, unpinned to a run: signals and queries follow it across
    continue-as-new. (Not `get_workflow_handle_for(AgentWorkflow.run, …)`: on a clean cache mypy
    2.4 infers that call as Never whenever a module checked with it calls
    `execute_activity_method` with an activity of no argument.)"""
    return client.get_workflow_handle(workflow_id, result_type=AgentStatus)


class TemporalWaker:
    """The broker's Waker, and the lifecycle activities' AgentLoops (hyperhive/ports.py)."""

    def __init__(self, client: Client, settings: HiveSettings, engine: Engine) -> None:
        self._client = client
        self._settings = settings
        self._engine = engine
        # An agent never moves to another host, so its host is looked up once.
        self._hosts: dict[str, str] = {}

    async def host_of(self, agent: str) -> str:
        """The host `agent` is registered on (this host for one not registered yet)."""
        host = self._hosts.get(agent)
        if host is None:
            found = await asyncio.to_thread(host_store.agent_host, self._engine, agent)
            if found is None:
                return self._settings.host_id
            host = self._hosts[agent] = found
        return host

    async def __call__(self, agent: str) -> None:
        """Signal-with-start: the workflow is started if it is not running."""
        await self._client.start_workflow(
            AgentWorkflow.run,
            AgentWorkflowInput(
                name=agent,
                host_task_queue=host_task_queue(await self.host_of(agent)),
                limits=agent_limits(self._settings),
            ),
            id=agent_workflow_id(agent),
            task_queue=self._settings.core_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # The SDK takes a start signal by name only; a @workflow.signal without name= is
            # named after its method.
            start_signal=AgentWorkflow.notify.__name__,
            search_attributes=agent_search_attributes(agent),
        )

    async def follow_settings(self, agents: list[str]) -> list[str]:
        """Send the settings' limits to the running turn loops of `agents` (a loop keeps the
        limits it started with otherwise); returns the agents that got them."""
        limits = agent_limits(self._settings)
        told = []
        for agent in agents:
            handle = agent_loop_handle(self._client, agent_workflow_id(agent))
            try:
                await handle.signal(AgentWorkflow.set_limits, limits)
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:  # not running: it starts with them
                    raise
                continue
            told.append(agent)
        return told

    async def stop(self, agent: str) -> None:
        """Signal the turn loop to stop and wait until it has: a start right after a kill must
        not reach a run that is still finishing (its wake-up would be lost)."""
        # Untyped: its result is only waited for; an older run's need not parse as AgentStatus.
        handle = self._client.get_workflow_handle(agent_workflow_id(agent))
        try:
            await handle.signal(AgentWorkflow.stop)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return  # not running: nothing to stop
            raise
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
