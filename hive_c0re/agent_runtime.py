"""Brings a registered agent to life on this host: its directories, its MCP socket and its page."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from api.mcp_server import AgentMcpSockets
from api.model_proxy import ModelProxies
from hyperhive.private_files import private_dir
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store

if TYPE_CHECKING:
    # Only for the annotation: the page servers pull in the operator service and the web app.
    from api.agent_page_servers import AgentPageServers

log = logging.getLogger(__name__)


class AgentRuntime:
    def __init__(
        self,
        settings: HiveSettings,
        engine: Engine,
        sockets: AgentMcpSockets,
        proxies: ModelProxies | None = None,
        pages: AgentPageServers | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._sockets = sockets
        # Sandboxes without a network reach the model API only through these.
        self._proxies = proxies
        # Each agent's page on its own port; it never fails the agent (see AgentPageServers).
        self._pages = pages

    def prepare_dirs(self, agent: str) -> None:
        base = self._settings.agent_state_dir(agent)
        for sub in ("home", "work"):
            private_dir(base / sub)
        # HOME/.claude holds credentials and sessions: only the agent may read it.
        (base / "home" / ".claude").mkdir(mode=0o700, exist_ok=True)

    async def ensure(self, agent: str) -> None:
        await asyncio.to_thread(self.prepare_dirs, agent)
        await self._sockets.start(agent)
        if self._proxies is not None:
            await self._proxies.start(agent)
        if self._pages is not None:
            await self._pages.start(agent)

    async def ensure_all(self) -> list[str]:
        """Every agent registered on this host gets its socket, proxy and page (at start-up);
        the other hosts' agents are served by their own hive-c0re."""
        agents = await asyncio.to_thread(agent_store.list_agents, self._engine)
        here = [info.name for info in agents if info.host_id == self._settings.host_id]
        for name in here:
            await self.ensure(name)
        elsewhere = sorted({info.host_id for info in agents} - {self._settings.host_id})
        if elsewhere:
            log.info(
                "%d of %d agents live on other hosts (%s): their hive-c0re serves them",
                len(agents) - len(here),
                len(agents),
                ", ".join(elsewhere),
            )
        return here
