"""Child processes that must not outlive hive-c0re, and killing whole process groups."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when hive-c0re dies, even by SIGKILL."""

    def _set() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)

    return _set


def kill_process_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the group led by `pid` (a child started with start_new_session / process_group=0)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
