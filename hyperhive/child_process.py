"""Child processes that must not outlive hive-c0re, and killing whole process groups."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when hive-c0re dies, even by SIGKILL."""

    def _set() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)

    return _set


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def dying_with_parent(
    argv: Sequence[str], sig: signal.Signals = signal.SIGKILL
) -> tuple[list[str], Callable[[], None] | None]:
    """`argv` made to die with hive-c0re, and the preexec_fn that still needs (None = none).

    With util-linux's setpriv the signal is set by a wrapper that execs `argv`, so Python can
    start the child with vfork: a preexec_fn forces a fork of the whole daemon (hundreds of MB
    of page tables) for every turn.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return list(argv), die_with_parent(sig)
    return [setpriv, "--pdeathsig", sig.name.removeprefix("SIG"), "--", *argv], None


def kill_process_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the group led by `pid` (a child started with start_new_session / process_group=0)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LiveProcesses:
    """The processes started in each agent's container (turns, warm claudes): a container that
    stops takes them down with it."""

    def __init__(self) -> None:
        self._live: dict[str, set[asyncio.subprocess.Process]] = {}

    def add(self, agent: str, process: asyncio.subprocess.Process) -> None:
        live = self._live.setdefault(agent, set())
        live.difference_update({p for p in live if p.returncode is not None})
        live.add(process)

    def kill(self, agent: str) -> None:
        for process in self._live.pop(agent, set()):
            if process.returncode is None:
                kill_process_group(process.pid)
