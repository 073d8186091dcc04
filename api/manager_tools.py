"""The tools only hm1nd's MCP socket offers: other agents' sockets do not even list them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field
from sqlalchemy import Engine

from api.mcp_server import ExtraTools, hive_tool
from control.lifecycle import Lifecycle
from hyperhive.domain import MANAGER_NAME
from hyperhive.store import agents as agent_store


def manager_tools(lifecycle: Lifecycle, engine: Engine) -> ExtraTools:
    def register(server: MCPServer) -> None:
        @hive_tool(server)
        async def request_spawn(
            name: Annotated[str, Field(description="The new agent's name: a-z, 0-9, '-', ≤ 9.")],
            purpose: Annotated[
                str, Field(description="What the agent is for (shown to the human).")
            ],
        ) -> str:
            """Ask the human operator to approve a new agent, or the return of one whose
            container is gone (destroyed): it comes back with its config, inbox and history.
            You get a message when it is decided (and, once approved, when the agent is up)."""
            workflow_id = await lifecycle.request_spawn(name, purpose, requester=MANAGER_NAME)
            return f"spawn of {name} requested ({workflow_id}); waiting for the operator"

        @hive_tool(server)
        async def kill(
            name: Annotated[str, Field(description="The agent to stop.")],
        ) -> str:
            """Stop an agent: its turn loop and container stop; its messages stay queued."""
            outcome = await lifecycle.kill(name, by=MANAGER_NAME)
            return outcome.detail

        @hive_tool(server)
        async def request_apply_commit(
            name: Annotated[str, Field(description="The agent whose config to change.")],
            sha: Annotated[str, Field(description="Commit in /agents/<name> (7-40 hex chars).")],
            description: Annotated[str, Field(description="Why (shown to the human).")],
        ) -> str:
            """Ask the human operator to apply a commit of an agent's config repo (agent.nix,
            CLAUDE.md) to its container. You get a message when it is decided and deployed."""
            workflow_id = await lifecycle.request_apply_commit(
                name, sha, description, requester=MANAGER_NAME
            )
            return f"apply requested ({workflow_id}); waiting for the operator"

        @hive_tool(server)
        async def list_agents() -> str:
            """Every agent with its state, pending messages, container and deployed config."""
            agents = await asyncio.to_thread(agent_store.list_agents, engine)
            lines = [
                f"{a.name}: {a.state}, {a.pending} pending, container {a.container_status}, "
                f"config {(a.deployed_sha or '-')[:12]}"
                + (f', status "{a.status_text}"' if a.status_text else "")
                for a in agents
            ]
            return "\n".join(lines) or "no agents"

    return register


def extra_tools_for(lifecycle: Lifecycle, engine: Engine) -> Callable[[str], ExtraTools | None]:
    """For AgentMcpSockets: the manager tools on hm1nd's socket, nothing extra elsewhere."""
    tools = manager_tools(lifecycle, engine)

    def pick(agent: str) -> ExtraTools | None:
        return tools if agent == MANAGER_NAME else None

    return pick
