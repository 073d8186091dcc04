"""A proposed commit, taken into hive-c0re's own storage before anyone sees or approves it.

hm1nd controls everything in its repo for an agent, the object store included: it can rewrite a
loose object after the operator saw the diff (git `cat-file`, `ls-tree` and `diff` do not re-hash
what they read), plant `objects/info/alternates` pointing into another agent's repo, a FIFO or a
symlink where an object should be. So a proposed commit is read once, at request time, like this:

1. the proposed object store is copied into a private directory hive-c0re owns: regular files
   only, opened without following symlinks and without blocking, bounded in count and bytes;
   `info/` (alternates) is not copied, so git never looks outside the copy;
2. the commit, its tree and its config blobs are read from the copy and each is re-hashed here:
   an object whose content does not match its id is refused;
3. the tree is parsed here (every entry, duplicates included) and checked by the caller;
4. the verified blobs and tree are written into the applied repo's object store (git hashes them
   again as it writes) under `refs/hive/proposed/<commit sha>` → tree.

From then on the diff shown to the operator and the content applied are both read from that ref,
so what the operator saw is byte for byte what is applied, whatever hm1nd does to its repo.

Everything here is synchronous and blocking; nothing runs at import.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hyperhive.repo_git import FULL_SHA, RepoError, run_git

SNAPSHOT_REF_PREFIX = "refs/hive/proposed/"
# A config repo is a few files and their history; far more than this is not one.
MAX_STORE_FILES = 20_000
MAX_STORE_BYTES = 64 << 20

_HEX = frozenset("0123456789abcdef")
_TREE_MODE = "40000"
_SUBMODULE_MODE = "160000"


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a verified tree. `kind` follows from the mode, as git's own does."""

    mode: str
    name: str
    oid: str

    @property
    def kind(self) -> str:
        if self.mode == _TREE_MODE:
            return "tree"
        if self.mode == _SUBMODULE_MODE:
            return "commit"
        return "blob"


@dataclass(frozen=True)
class Snapshot:
    """A proposed commit as hive-c0re holds it: the commit's id, its tree's id and entries."""

    commit: str
    tree: str
    entries: tuple[TreeEntry, ...]


# ---------------------------------------------------------------------------------------------
# the private copy


def _too_large() -> RepoError:
    return RepoError(
        "too_large",
        f"the proposed repo's object store holds more than {MAX_STORE_FILES} files or "
        f"{MAX_STORE_BYTES >> 20} MiB; a config repo is far smaller",
        "start the agent's config history afresh (a new repo with one commit)",
    )


def _copy_regular(source_dir: int, name: str, target: Path, budget: list[int]) -> None:
    """Copy one file of the proposed store if it is a regular file (no symlink, FIFO, device)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=source_dir)
    except OSError:
        return  # a symlink (ELOOP), gone, or unreadable: not an object we can trust
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return
        with target.open("xb") as out:
            while chunk := handle.read(1 << 16):
                budget[0] -= len(chunk)
                if budget[0] < 0:  # it grew since it was listed
                    raise _too_large()
                out.write(chunk)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX


def _is_object_file(directory: str, name: str) -> bool:
    if directory == "pack":
        return name.startswith("pack-") and name.endswith((".pack", ".idx"))
    return _is_hex(name, 38)


def _listing(top: int) -> dict[str, list[str]]:
    """Object directory → the object files in it (regular files by lstat), within the bounds."""
    found: dict[str, list[str]] = {}
    files = size = 0
    with os.scandir(top) as entries:
        directories = [
            e.name
            for e in entries
            if e.is_dir(follow_symlinks=False) and (_is_hex(e.name, 2) or e.name == "pack")
        ]
    for directory in directories:
        try:
            sub = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
        except OSError:
            continue
        try:
            with os.scandir(sub) as items:
                for item in items:
                    if _is_object_file(directory, item.name) and item.is_file(
                        follow_symlinks=False
                    ):
                        files += 1
                        size += item.stat(follow_symlinks=False).st_size
                        if files > MAX_STORE_FILES or size > MAX_STORE_BYTES:
                            raise _too_large()
                        found.setdefault(directory, []).append(item.name)
        finally:
            os.close(sub)
    return found


def copy_object_store(objects: Path, into: Path) -> None:
    """Copy the loose objects (`xx/<38 hex>`) and packs (`pack/pack-*.{pack,idx}`) of `objects`
    into `into`, which must be empty. Nothing else is copied: not `info/alternates`, not a
    symlink, not a FIFO, not a file with another name."""
    budget = [MAX_STORE_BYTES]
    top = os.open(objects, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for directory, names in _listing(top).items():
            try:
                sub = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            except OSError:
                continue
            try:
                (into / directory).mkdir()
                for name in names:
                    _copy_regular(sub, name, into / directory / name, budget)
            finally:
                os.close(sub)
    finally:
        os.close(top)


@contextmanager
def private_copy(objects: Path, scratch_parent: Path) -> Iterator[Path]:
    """A private copy of the proposed object store, removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="incoming-", dir=scratch_parent))
    try:
        copy_object_store(objects, scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# verified reads


def object_id(kind: str, content: bytes) -> str:
    """The SHA-1 object id git gives `content` of type `kind`.

    Re-hashing catches an object rewritten in place; a crafted SHA-1 collision is no use either,
    since what is shown and what is applied are both the one copy taken here."""
    return hashlib.sha1(
        f"{kind} {len(content)}\0".encode() + content, usedforsecurity=False
    ).hexdigest()


def read_verified(
    git_dir: Path, objects: Path, oids: Sequence[str], agent: str
) -> dict[str, tuple[str, bytes]]:
    """oid → (type, content) for each of `oids`, read from the store `objects` and re-hashed.

    A missing object or one whose content does not hash to its id raises RepoError."""
    if not oids:
        return {}
    out = run_git(
        ["--git-dir", str(git_dir), "cat-file", "--batch"],
        cwd=git_dir,
        env={"GIT_OBJECT_DIRECTORY": str(objects)},
        stdin="".join(f"{oid}\n" for oid in oids).encode(),
    )
    found: dict[str, tuple[str, bytes]] = {}
    at = 0
    for oid in oids:
        header_end = out.index(b"\n", at)
        header = out[at:header_end].decode("ascii", "replace").split()
        if len(header) != 3:
            raise RepoError(
                "missing_object",
                f"object {oid[:12]} is missing from the proposed repo of {agent}",
                f"commit again in /agents/{agent} (`git fsck` there lists what is damaged)",
            )
        kind, size = header[1], int(header[2])
        content = out[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
        if object_id(kind, content) != oid:
            raise RepoError(
                "corrupt_object",
                f"object {oid[:12]} in the proposed repo of {agent} does not match its id: "
                "it was changed after it was written",
                f"commit again in /agents/{agent}, and do not edit files under .git/objects",
            )
        found[oid] = (kind, content)
    return found


def commit_tree(content: bytes, commit: str, agent: str) -> str:
    """The tree id a commit object names (its first line)."""
    first = content.split(b"\n", 1)[0].decode("ascii", "replace")
    kind, _, tree = first.partition(" ")
    if kind != "tree" or not FULL_SHA.match(tree):
        raise RepoError(
            "corrupt_object", f"commit {commit[:12]} of {agent} has no tree line", "commit again"
        )
    return tree


def parse_tree(content: bytes, tree: str, agent: str) -> tuple[TreeEntry, ...]:
    """Every entry of a tree object, in order, duplicates included."""
    entries: list[TreeEntry] = []
    at = 0
    try:
        while at < len(content):
            space = content.index(b" ", at)
            nul = content.index(b"\0", space)
            raw_oid = content[nul + 1 : nul + 21]
            if len(raw_oid) != 20:
                raise ValueError("short object id")
            entries.append(
                TreeEntry(
                    mode=content[at:space].decode("ascii"),
                    name=content[space + 1 : nul].decode("utf-8", "replace"),
                    oid=raw_oid.hex(),
                )
            )
            at = nul + 21
    except ValueError as exc:
        raise RepoError(
            "corrupt_object", f"tree {tree[:12]} of {agent} is malformed ({exc})", "commit again"
        ) from None
    return tuple(entries)


# ---------------------------------------------------------------------------------------------
# hive-c0re's copy


def snapshot_ref(commit: str) -> str:
    return SNAPSHOT_REF_PREFIX + commit


def stored_tree(applied: Path, commit: str) -> str | None:
    """The tree of the snapshot of `commit` in the applied repo, if one was taken."""
    try:
        out = run_git(
            ["-C", str(applied), "rev-parse", "--verify", "-q", snapshot_ref(commit)],
            cwd=applied,
        )
    except RepoError:
        return None
    tree = out.decode().strip()
    return tree if FULL_SHA.match(tree) else None


def stored_entries(applied: Path, tree: str) -> tuple[TreeEntry, ...]:
    """The entries of a tree hive-c0re stored (its own objects: already verified)."""
    kind, content = read_verified(applied / ".git", applied / ".git" / "objects", [tree], "")[tree]
    if kind != "tree":
        raise RepoError("corrupt_object", f"{tree[:12]} in the applied repo is not a tree")
    return parse_tree(content, tree, "")


def store(applied: Path, commit: str, tree: str, objects: dict[str, tuple[str, bytes]]) -> None:
    """Write verified objects into the applied repo (git hashes each again) and point the
    snapshot ref of `commit` at `tree`."""
    for oid, (kind, content) in objects.items():
        written = run_git(
            ["-C", str(applied), "hash-object", "-w", "-t", kind, "--stdin"],
            cwd=applied,
            stdin=content,
        )
        if written.decode().strip() != oid:
            raise RepoError("corrupt_object", f"object {oid[:12]} changed while it was stored")
    run_git(["-C", str(applied), "update-ref", snapshot_ref(commit), tree], cwd=applied)
