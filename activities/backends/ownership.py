"""Giving an agent's data dirs to the host uid its bwrap sandbox runs as (backends.bwrap).

When hive-c0re runs as root, an agent's sandbox runs as an unprivileged host uid (the sandbox uid),
root only inside its own user namespace. Its writable mount sources must belong to that uid, or
the agent cannot use them: hive-c0re (root) creates its run dir and (re)creates the MCP and model
sockets in it at every start (connecting to a unix socket needs write permission on it), writes
pasted credentials into home/.claude, makes work/, and for hm1nd creates every new agent's
proposed repo. So before every exec the backend `adopt`s each writable mount source:

- its root dir is given to the sandbox uid;
- every entry directly inside that the sandbox uid does not own is given to it, and a directory
  it did not own (a repo hive-c0re just created) is walked in full;
- a directory the sandbox uid already owns is the agent's own: it is not walked. A turn costs one
  stat per top-level entry, however many files the agent keeps below them.

The agent controls everything inside those dirs, and may plant symlinks (or swap entries while
the walk runs), so every step is relative to an open directory fd and never follows a link: the
root is opened O_DIRECTORY|O_NOFOLLOW, entries are lstat'ed and lchown'ed through dir_fd, and a
directory is entered only by opening it O_DIRECTORY|O_NOFOLLOW from its parent's fd (an entry
swapped for a symlink fails to open and is skipped). A planted symlink is itself given to the
sandbox uid, never its target. Hard links cannot smuggle a host file in: link(2) across mounts
fails (EXDEV), and inside its mounts the agent only finds files that are its own or that
hive-c0re put there for it.

`share_read_only` makes a read-only mount source (the agent's applied config) exist and readable
by the sandbox uid while staying root's: the directory at least 0755, the files directly inside
readable by all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors of an entry that vanished or changed kind between listing and use: skipped (the agent
# may be changing its own files while hive-c0re adopts them).
RACES = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)
# Enough for any real tree; a deeper one is left as it is rather than exhausting fds.
MAX_DEPTH = 256


def adopt(root: Path, uid: int, gid: int) -> int:
    """Give `root` (a writable mount source, created if missing) and what hive-c0re created in
    it to uid:gid, without following any symlink. Returns how many entries changed owner."""
    root.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd = os.open(root, DIR_FLAGS)
    try:
        changed = _own(fd, os.fstat(fd), uid, gid)
        return changed + _walk(fd, uid, gid, full=False, depth=0)
    finally:
        os.close(fd)


def share_read_only(root: Path) -> None:
    """`root` (a read-only mount source, root's) exists and the sandbox uid can read it. A source
    that is not a directory (a file, a link) is left as it is."""
    if not os.path.lexists(root):
        root.mkdir(parents=True, mode=0o755, exist_ok=True)
    elif root.is_symlink() or not root.is_dir():
        return
    fd = os.open(root, DIR_FLAGS)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o755 != 0o755:
            os.fchmod(fd, mode | 0o755)
        for name in os.listdir(fd):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o004 == 0:
                    with _opened(fd, name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK) as file:
                        os.fchmod(file, stat.S_IMODE(st.st_mode) | 0o444)
            except OSError as e:
                if e.errno not in RACES:
                    raise
    finally:
        os.close(fd)


def _walk(dir_fd: int, uid: int, gid: int, *, full: bool, depth: int) -> int:
    """Adopt the entries of the open directory `dir_fd`: those not owned by uid; directories are
    entered when not owned by uid (and everything below them), or all of them when `full`."""
    changed = 0
    for name in os.listdir(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            owned = st.st_uid == uid
            if stat.S_ISDIR(st.st_mode) and (full or not owned) and depth < MAX_DEPTH:
                with _opened(dir_fd, name, DIR_FLAGS) as sub:
                    # Owner and kind as opened (the entry may have been swapped since the stat).
                    changed += _own(sub, os.fstat(sub), uid, gid)
                    changed += _walk(sub, uid, gid, full=True, depth=depth + 1)
            elif not owned:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                changed += 1
        except OSError as e:
            if e.errno not in RACES:
                raise
    return changed


def _own(fd: int, st: os.stat_result, uid: int, gid: int) -> int:
    if (st.st_uid, st.st_gid) == (uid, gid):
        return 0
    os.fchown(fd, uid, gid)
    return 1


@contextlib.contextmanager
def _opened(dir_fd: int, name: str, flags: int) -> Iterator[int]:
    fd = os.open(name, flags | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)
