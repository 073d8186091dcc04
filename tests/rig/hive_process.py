"""Run the real `hive` command as a user would, and watch its processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hive_c0re.up import READY_LINE
from tests.rig.ports import free_ports

HIVE = str(Path(sys.executable).parent / "hive")


@dataclass
class HiveEnv:
    state_dir: Path
    dashboard_port: int
    temporal_port: int
    temporal_ui_port: int
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fresh(cls, state_dir: Path) -> HiveEnv:
        dashboard, temporal, ui = free_ports(3)
        return cls(state_dir, dashboard, temporal, ui)

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update(
            HIVE_STATE_DIR=str(self.state_dir),
            HIVE_DASHBOARD_PORT=str(self.dashboard_port),
            HIVE_TEMPORAL_PORT=str(self.temporal_port),
            HIVE_TEMPORAL_UI_PORT=str(self.temporal_ui_port),
        )
        env.update(self.extra)
        return env

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def temporal_ui(self) -> str:
        return f"http://127.0.0.1:{self.temporal_ui_port}"

    @property
    def temporal_target(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"


class HiveProcess:
    """`hive <command>` in the background; stdout/stderr collected by reader threads."""

    def __init__(self, env: HiveEnv, *args: str) -> None:
        self.proc = subprocess.Popen(
            [HIVE, *args],
            env=env.environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: Iterator[str], sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if line.startswith(READY_LINE):
                self._ready.set()
        self._ready.set()  # the stream closed: the process is gone, wake any waiter

    def wait_ready(self, timeout: float = 120) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError(
                f"hive did not become ready (rc={self.proc.poll()}):\n{self.output()}"
            )

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as in a terminal, and wait for the exit."""
        self.proc.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def finish(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout)
        self._close_pipes(timeout)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes(2)

    def _close_pipes(self, timeout: float) -> None:
        """After the readers have seen the pipes end (closing under a reader raises in it).
        A pipe a grandchild still holds open keeps its reader: that pipe stays open too."""
        for thread, pipe in zip(self._threads, (self.proc.stdout, self.proc.stderr), strict=True):
            thread.join(timeout)
            if not thread.is_alive() and pipe is not None:
                pipe.close()


def run_hive(env: HiveEnv, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HIVE, *args],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line mentions `text` (e.g. a test's unique state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    """Wait for processes (not our children) to exit, via pidfds; return those still alive."""
    alive = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            readable, _, _ = select.select([fd], [], [], timeout)
            if not readable:
                alive.append(pid)
        finally:
            os.close(fd)
    return alive


def pids_with_cwd(path: Path) -> list[int]:
    """Processes working in `path` (an agent's claude and its MCP bridge run in its work dir)."""
    found = []
    target = str(path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == target:
                found.append(int(entry.name))
        except OSError:
            continue
    return found
