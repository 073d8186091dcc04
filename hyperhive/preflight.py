"""Checks made before anything starts, so a bad setup fails in one clear sentence."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hyperhive.errors import StartupError
from hyperhive.private_files import private_dir
from hyperhive.settings import LONGEST_AGENT_SOCKET_SUFFIX, UNIX_SOCKET_PATH_MAX, HiveSettings


@dataclass(frozen=True)
class PortNeed:
    port: int
    setting: str
    purpose: str


def ports_to_bind(settings: HiveSettings, *, with_temporal: bool) -> list[PortNeed]:
    needs = [PortNeed(settings.dashboard_port, "HIVE_DASHBOARD_PORT", "the dashboard")]
    if with_temporal:
        needs += [
            PortNeed(settings.temporal_port, "HIVE_TEMPORAL_PORT", "the embedded Temporal server"),
            PortNeed(settings.temporal_ui_port, "HIVE_TEMPORAL_UI_PORT", "the Temporal Web UI"),
        ]
    return needs


def check_ports_free(host: str, needs: list[PortNeed]) -> None:
    seen: dict[int, PortNeed] = {}
    for need in needs:
        if need.port in seen:
            other = seen[need.port]
            raise StartupError(
                f"{need.setting} and {other.setting} are both {need.port}",
                "give each service its own port",
            )
        seen[need.port] = need
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, need.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(
                        f"port {need.port} on {host} ({need.setting}, for {need.purpose}) is "
                        "already in use",
                        f"stop whatever listens there (`ss -ltnp 'sport = :{need.port}'` shows "
                        f"it; maybe another `hive up`), or set {need.setting} to a free port",
                    ) from exc
                raise StartupError(
                    f"cannot bind {host}:{need.port} ({need.setting}): {exc.strerror}",
                    "check HIVE_BIND_HOST is an address of this machine",
                ) from exc


def ensure_writable_dir(path: Path, setting: str) -> None:
    """Create `path` if needed and prove we can write there."""
    if path.exists() and not path.is_dir():
        raise StartupError(
            f"{setting} is {path}, which exists and is not a directory",
            f"point {setting} at a directory (it is created if missing)",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"{setting} {path} is not writable: {exc.strerror or exc}",
            f"fix its permissions (hive-c0re needs to create files there) or set {setting} "
            "to a writable directory",
        ) from exc


def check_socket_room(run_path: Path) -> None:
    longest = len(str(run_path)) + LONGEST_AGENT_SOCKET_SUFFIX
    if longest > UNIX_SOCKET_PATH_MAX:
        raise StartupError(
            f"the run dir {run_path} is too deep for unix sockets: an agent socket path would be "
            f"{longest} bytes, the limit is {UNIX_SOCKET_PATH_MAX}",
            "set HIVE_RUN_DIR to a shorter path, e.g. /run/hyperhive or /tmp/hive-run",
        )


class StateLock:
    """An exclusive lock on the state dir: two daemons on one store would deliver twice."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path / "hive.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StartupError(
                f"the state dir {self.path.parent} is in use by {holder}",
                "stop that hive first, or set HIVE_STATE_DIR to another directory",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def private_dir_mode() -> int:
    """0700; 0711 when hive-c0re runs as root, since bwrap sandboxes then run as an unprivileged
    uid (HIVE_SANDBOX_UID) that must pass through to its own agent's dirs (never list them)."""
    return 0o711 if os.geteuid() == 0 else 0o700


def prepare_dirs(settings: HiveSettings) -> None:
    ensure_writable_dir(settings.state_path, "HIVE_STATE_DIR")
    check_socket_room(settings.run_path)
    ensure_writable_dir(settings.run_path, "HIVE_RUN_DIR")
    # Messages, approvals, credentials and sockets: nobody else on the host lists or reads them.
    private_dir(settings.state_path, private_dir_mode())
    private_dir(settings.run_path, private_dir_mode())
    # Below the state dir too: a dir 0711 lets anyone open a path whose name they guess (agent
    # names are easy to guess), so what is not a sandbox's way through is 0700.
    for name in ("logs", "secrets", "applied", "proposed", "containers"):
        private_dir(settings.state_path / name)
    private_dir(settings.state_path / "agents", private_dir_mode())
