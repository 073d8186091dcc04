"""The container backend interface: how hive-c0re makes, runs and removes an agent's container."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from hyperhive.errors import HiveError


@dataclass(frozen=True)
class AgentView:
    """Paths as the agent's processes see them (inside its container)."""

    home: str
    work: str
    mcp_socket: str
    # The agent's applied Claude Code config (CLAUDE.md, settings.json), read-only.
    config: str = "/hive/config"
    # hm1nd only: every agent's proposed config repo, one directory per agent.
    repos: str = "/agents"


@dataclass(frozen=True)
class Mount:
    host: Path
    container: str
    writable: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """What a container is made from: the agent's applied flake dir and its bind mounts."""

    agent: str
    flake_dir: Path  # applied/<name>: flake.nix + agent.nix + CLAUDE.md
    mounts: tuple[Mount, ...] = field(default_factory=tuple)


class ContainerStatus(StrEnum):
    UP = "up"
    DOWN = "down"
    ABSENT = "absent"


class BackendErrorKind(StrEnum):
    ALREADY_EXISTS = "already_exists"
    NOT_FOUND = "not_found"
    INVALID_NAME = "invalid_name"
    NAME_TOO_LONG = "name_too_long"
    BUILD_FAILED = "build_failed"
    START_FAILED = "start_failed"
    STOP_FAILED = "stop_failed"
    UPDATE_FAILED = "update_failed"
    NOT_RUNNING = "not_running"
    UNAVAILABLE = "unavailable"
    # A host path the backend cannot hand to the container as it is (where the state or run dir
    # lies): moving the dir is the fix.
    BAD_PATH = "bad_path"
    FAILED = "failed"


# What the same call would fail with again: only a person can fix these (the agent's flake, its
# name, the host, the state dir's path), so the lifecycle activities fail them at once and the
# workflow reports instead of retrying. A nix build failure is one: nix itself already retried
# its downloads (`download-attempts`), and what is left is the agent's config, nixpkgs or the
# hyperhive flake, which a rebuild of the same commit builds the same way. The others (a start
# or stop that failed, a reload, a CLI failure nobody recognized) may go another way next time.
PERMANENT: frozenset[BackendErrorKind] = frozenset(
    {
        BackendErrorKind.NOT_FOUND,
        BackendErrorKind.INVALID_NAME,
        BackendErrorKind.NAME_TOO_LONG,
        BackendErrorKind.BUILD_FAILED,
        BackendErrorKind.UNAVAILABLE,
        BackendErrorKind.BAD_PATH,
    }
)


class BackendError(HiveError):
    """A container operation failed. `kind` says how (classified from the backend's output)."""

    def __init__(self, kind: BackendErrorKind, what: str, hint: str = "") -> None:
        self.kind = kind
        super().__init__(what, hint)

    @property
    def permanent(self) -> bool:
        """Retrying cannot help (see PERMANENT)."""
        return self.kind in PERMANENT


class ContainerBackend(Protocol):
    name: str
    # Whether agents run inside a sandbox that is their security boundary (bwrap, nixos): then
    # their claude may use its tools without prompts by default.
    sandboxed: bool

    def view(self, agent: str) -> AgentView:
        """Where the agent's HOME, working dir and MCP socket are, inside the container."""
        ...

    def hive_agent_command(self) -> list[str]:
        """How to start `hive-agent` inside the container."""
        ...

    async def create(self, spec: ContainerSpec) -> None:
        """Make the container (idempotent: an existing one is left as it is)."""
        ...

    async def start(self, agent: str) -> None:
        """Start it (idempotent)."""
        ...

    async def stop(self, agent: str) -> None:
        """Stop it (idempotent; a missing container is already stopped)."""
        ...

    async def update(self, spec: ContainerSpec) -> None:
        """Rebuild it from its flake and reload it if running."""
        ...

    async def destroy(self, agent: str) -> None:
        """Remove it (idempotent). Bind-mounted data (repos, credentials, work) survives."""
        ...

    async def status(self, agent: str) -> ContainerStatus: ...

    async def exec(
        self,
        agent: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: bytes,
        host_cwd: Path,
        keep_stdin: bool = False,
    ) -> asyncio.subprocess.Process:
        """Start `argv` in the agent's container as the leader of its own process group, with
        stdout piped; the caller reads it and kills the group when done.

        `stdin` is written to the process; its stdin is then closed, unless `keep_stdin` (a
        warm claude reads one turn after another from it)."""
        ...
