"""The bind mounts every container backend gives an agent (DESIGN §1)."""

from __future__ import annotations

from activities.backends.base import AgentView, Mount
from hyperhive.domain import MANAGER_NAME
from hyperhive.settings import HiveSettings

CONTAINER_VIEW = AgentView(home="/root", work="/work", mcp_socket="/run/hive/mcp.sock")
# The turn writes the agent's applied CLAUDE.md and settings.json here, on the host, before every
# claude run (hyperhive.agent_config); the agent can read them, never change them.
CONFIG_SUBDIR = "config"


def agent_mounts(settings: HiveSettings, agent: str) -> tuple[Mount, ...]:
    base = settings.agent_state_dir(agent)
    mounts = [
        # Its MCP socket dir, and nothing else of the run dir: the socket is its identity.
        Mount(settings.agent_run_dir(agent), "/run/hive", writable=True),
        # Credentials and claude's sessions.
        Mount(base / "home" / ".claude", "/root/.claude", writable=True),
        Mount(base / "work", CONTAINER_VIEW.work, writable=True),
        Mount(base / CONFIG_SUBDIR, CONTAINER_VIEW.config, writable=False),
    ]
    if agent == MANAGER_NAME:
        # hm1nd edits every agent's proposed config repo.
        mounts.append(Mount(settings.state_path / "proposed", CONTAINER_VIEW.repos, writable=True))
    return tuple(mounts)
