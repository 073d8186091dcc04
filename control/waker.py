"""Wakes an agent's turn loop: signal-with-start of its AgentWorkflow with `notify`."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from hyperhive.models import AgentLimits, AgentWorkflowInput
from hyperhive.settings import HiveSettings

HIVE_AGENT = SearchAttributeKey.for_keyword("HiveAgent")


def agent_search_attributes(agent: str) -> TypedSearchAttributes:
    """What every workflow of `agent` carries, so that `HiveAgent='<agent>'` finds them all."""
    return TypedSearchAttributes([SearchAttributePair(HIVE_AGENT, agent)])


def agent_workflow_id(agent: str) -> str:
    return f"hive-agent-{agent}"


def agent_limits(settings: HiveSettings) -> AgentLimits:
    return AgentLimits(
        max_turns_per_hour=settings.max_turns_per_hour,
        max_spend_usd_per_day=settings.max_spend_usd_per_day,
        turn_timeout_s=settings.turn_timeout_s,
        heartbeat_timeout_s=settings.turn_heartbeat_timeout_s,
    )


class TemporalWaker:
    """The broker's Waker. Signal-with-start: the workflow is started if it is not running."""

    def __init__(self, client: Client, settings: HiveSettings) -> None:
        self._client = client
        self._settings = settings

    async def __call__(self, agent: str) -> None:
        await self._client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(
                name=agent,
                host_task_queue=self._settings.host_task_queue,
                limits=agent_limits(self._settings),
            ),
            id=agent_workflow_id(agent),
            task_queue=self._settings.core_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="notify",
            search_attributes=agent_search_attributes(agent),
        )

    async def follow_settings(self, agents: list[str]) -> list[str]:
        """Send the settings' limits to the running turn loops of `agents` (a loop keeps the
        limits it started with otherwise); returns the agents that got them."""
        limits = agent_limits(self._settings)
        told = []
        for agent in agents:
            handle = self._client.get_workflow_handle(agent_workflow_id(agent))
            try:
                await handle.signal("set_limits", limits)
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:  # not running: it starts with them
                    raise
                continue
            told.append(agent)
        return told
