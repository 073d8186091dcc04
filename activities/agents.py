"""Activities that record an agent's state and speak to the operator for it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import Engine
from temporalio import activity

from hyperhive.broker import Broker
from hyperhive.domain import AgentState
from hyperhive.models import AgentStateChange, OperatorNotice
from hyperhive.store import agents as agent_store


class AgentActivities:
    def __init__(self, engine: Engine, broker: Broker) -> None:
        self._engine = engine
        self._broker = broker

    @activity.defn(name="set_agent_state")
    async def set_agent_state(self, change: AgentStateChange) -> None:
        await asyncio.to_thread(
            agent_store.set_agent_state,
            self._engine,
            change.agent,
            AgentState(change.state),
            change.note or None,
        )

    @activity.defn(name="notify_operator")
    async def notify_operator(self, notice: OperatorNotice) -> None:
        await self._broker.notify_operator(notice.agent, notice.body)

    @activity.defn(name="last_session_id")
    async def last_session_id(self, agent: str) -> str:
        """The claude session a new run of the agent's turn loop resumes: that of its latest
        recorded turn ("" for none, or after a fresh re-spawn: the loop starts a new one)."""
        found: str = await asyncio.to_thread(agent_store.last_session_id, self._engine, agent)
        try:
            uuid.UUID(found)
        except ValueError:
            return ""  # claude takes only UUIDs (and "" means none)
        return found
