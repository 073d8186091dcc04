"""Activities that record an agent's state and speak to the operator for it."""

from __future__ import annotations

import asyncio

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
