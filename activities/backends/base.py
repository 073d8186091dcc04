"""The container backend interface: how hive-c0re runs things in an agent's container."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class AgentView:
    """Paths as the agent's processes see them (inside its container)."""

    home: str
    work: str
    mcp_socket: str


class ContainerBackend(Protocol):
    name: str

    def view(self, agent: str) -> AgentView:
        """Where the agent's HOME, working dir and MCP socket are, inside the container."""
        ...

    def hive_agent_command(self) -> list[str]:
        """How to start `hive-agent` inside the container."""
        ...

    async def exec(
        self,
        agent: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: bytes,
        host_cwd: Path,
    ) -> asyncio.subprocess.Process:
        """Start `argv` in the agent's container as the leader of its own process group, with
        stdout piped; the caller reads it and kills the group when done."""
        ...
