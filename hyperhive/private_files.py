"""Files only hive-c0re reads: the store and Temporal's database hold every message, approval and
workflow history, so they are 0600 however they came to exist."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def _with_sqlite_companions(path: Path) -> tuple[Path, ...]:
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def tighten_sqlite_files(path: Path) -> None:
    """An older, looser database (and its -wal and -shm) becomes 0600; a file someone else owns
    or a symlink is left alone (never followed)."""
    for candidate in _with_sqlite_companions(path):
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(candidate)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(candidate, stat.S_IMODE(st.st_mode) & 0o700)


def create_private_sqlite(path: Path) -> None:
    """The database file created 0600 before SQLite opens it (SQLite gives its -wal and -shm the
    database file's mode), and an existing one tightened."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    tighten_sqlite_files(path)


def private_dir(path: Path, mode: int = 0o700) -> None:
    """`path` made (with its parents) or tightened to `mode`: an older, looser dir loses what
    `mode` does not allow; a symlink is left alone (never followed). hive-c0re as root tightens
    dirs it gave to a sandbox uid too (their owner keeps full access)."""
    path.mkdir(parents=True, mode=mode, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
        with contextlib.suppress(PermissionError):  # not ours and we are not root: not ours to fix
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode, follow_symlinks=False)
