"""The `process` backend: agents as plain subprocesses of hive-c0re, for development only.

No isolation at all: an agent's claude can read and write anything hive-c0re can. Use bwrap or
nixos for anything but a developer's own experiments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
)
from activities.backends.mounts import CONFIG_SUBDIR
from hyperhive.child_process import LiveProcesses, dying_with_parent
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

WARNING = (
    "container backend 'process': agents run as plain subprocesses with NO isolation; "
    "they can read and change everything hive-c0re can. Install bubblewrap (or run on NixOS) "
    "for real sandboxes."
)


class ProcessBackend:
    name = "process"
    # No sandbox: agents' claude keeps a narrow default (hyperhive.agent_config).
    sandboxed = False

    def __init__(self, settings: HiveSettings) -> None:
        self._settings = settings
        self._live = LiveProcesses()
        log.warning(WARNING)

    def view(self, agent: str) -> AgentView:
        return host_view(self._settings, agent)

    def hive_agent_command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "hive-agent")]

    # There is no container: only whether it counts as made and running, in a small state file.

    def _state_file(self, agent: str) -> Path:
        return self._settings.state_path / "containers" / f"h-{agent}.process"

    async def create(self, spec: ContainerSpec) -> None:
        path = self._state_file(spec.agent)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(ContainerStatus.DOWN.value)

    async def start(self, agent: str) -> None:
        path = self._state_file(agent)
        if not path.exists():
            raise BackendError(
                BackendErrorKind.NOT_FOUND,
                f"container h-{agent} does not exist",
                "spawn the agent first",
            )
        path.write_text(ContainerStatus.UP.value)

    async def stop(self, agent: str) -> None:
        self._live.kill(agent)
        path = self._state_file(agent)
        if path.exists():
            path.write_text(ContainerStatus.DOWN.value)

    async def update(self, spec: ContainerSpec) -> None:
        if not self._state_file(spec.agent).exists():
            raise BackendError(
                BackendErrorKind.NOT_FOUND,
                f"container h-{spec.agent} does not exist",
                "spawn the agent first",
            )

    async def destroy(self, agent: str) -> None:
        self._live.kill(agent)
        self._state_file(agent).unlink(missing_ok=True)

    async def status(self, agent: str) -> ContainerStatus:
        path = self._state_file(agent)
        return (
            ContainerStatus(path.read_text().strip()) if path.exists() else ContainerStatus.ABSENT
        )

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
        # A turn must not outlive hive-c0re: after a crash it is retried, not duplicated.
        command, preexec = dying_with_parent(argv)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=host_cwd,
            env=dict(env),
            start_new_session=True,
            preexec_fn=preexec,
            limit=16 * 1024 * 1024,  # one stream-json line can carry a large tool result
        )
        self._live.add(agent, process)
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(stdin)
            await process.stdin.drain()
        if not keep_stdin:
            process.stdin.close()
        return process


def host_view(settings: HiveSettings, agent: str) -> AgentView:
    """An agent's paths as the host sees them: where a plain process (no container) works."""
    base = settings.agent_state_dir(agent)
    return AgentView(
        home=str(base / "home"),
        work=str(base / "work"),
        mcp_socket=str(settings.agent_socket_path(agent)),
        config=str(base / CONFIG_SUBDIR),
        repos=str(settings.state_path / "proposed"),
    )
