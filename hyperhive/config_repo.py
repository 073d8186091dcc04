"""Per-agent config repos (DESIGN §6), with the real `git` CLI (run by hyperhive.repo_git).

Under the state dir, per agent:

- `proposed/<name>` — a git repo the manager (hm1nd) edits at /agents/<name>. hm1nd also controls
  everything inside it, objects included, so hive-c0re treats it as untrusted input: after
  creating it, hive-c0re never runs a git command *in* it, and a proposed commit is read once,
  from a private copy of its object store, every object re-hashed, then kept in hive-c0re's own
  storage (hyperhive.proposed_commit); the diff the operator sees and the content applied both
  come from that copy. A short sha is resolved among objects only, never refs.
- `applied/<name>` — a git repo only hive-c0re writes. It holds the approved config files plus
  the generated `flake.nix` and `.hive-pin.json` (the hyperhive revision this agent's container is
  built from, its flake URL and the Nix system), so it is also the agent's flake:
  `nixosConfigurations.container` = hyperhive's agent module + `./agent.nix`. Their text comes
  from hyperhive.agent_flake; this module commits them (init_agent_repos, set_recorded_rev). It
  also holds the proposed commits taken so far, as `refs/hive/proposed/<sha>` → their trees.

What an applicable commit holds: hyperhive.config_tree. Apply copies the config files of that
commit into the applied repo (removing a settings.json the commit dropped) and commits them,
naming the proposed sha and the approver; applying content the applied repo already has is a
no-op.

Everything here is synchronous and blocking (run it in a thread from async code); nothing runs at
import.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from hyperhive.agent_config import INSTRUCTIONS_FILE, SETTINGS_FILE, AppliedClaudeFiles
from hyperhive.agent_flake import FLAKE_FILE, PIN_FILE, Pin, generate_flake, host_nix_system
from hyperhive.config_templates import AGENT_NIX_FILE, initial_config
from hyperhive.config_tree import (
    CONFIG_FILES,
    MAX_CONFIG_BYTES,
    REQUIRED_CONFIG_FILES,
    check_config,
    config_blob_entries,
)
from hyperhive.domain import MANAGER_NAME
from hyperhive.proposed_commit import (
    Snapshot,
    commit_tree,
    parse_tree,
    private_copy,
    read_verified,
    store,
    stored_entries,
    stored_tree,
)
from hyperhive.repo_git import FULL_SHA, RepoError, checked_agent, run_git

__all__ = ["CONFIG_FILES", "MAX_CONFIG_BYTES", "REQUIRED_CONFIG_FILES"]

BRANCH = "main"

_SHA_INPUT = re.compile(r"\A[0-9a-fA-F]{7,40}\Z")


# ---------------------------------------------------------------------------------------------
# paths


def proposed_dir(state_path: Path, agent: str) -> Path:
    """hm1nd's repo for `agent` (mounted in hm1nd's container at /agents/<agent>)."""
    return Path(state_path) / "proposed" / checked_agent(agent)


def applied_dir(state_path: Path, agent: str) -> Path:
    """hive-c0re's repo for `agent`: the approved config and the agent's flake."""
    return Path(state_path) / "applied" / checked_agent(agent)


def _proposed_objects(state_path: Path, agent: str) -> Path:
    """The proposed repo's object store, refusing layouts that point elsewhere."""
    repo = proposed_dir(state_path, agent)
    hint = f"hm1nd keeps this agent's config as a git repository at /agents/{agent}"
    for path in (repo, repo / ".git", repo / ".git" / "objects"):
        if path.is_symlink():
            raise RepoError(
                "no_repo",
                f"{path} is a symlink; the proposed repo of {agent} must be a plain directory",
                hint,
            )
        if not path.is_dir():
            raise RepoError(
                "no_repo",
                f"the proposed repo of {agent} is missing ({path} is not a directory)",
                hint,
            )
    return repo / ".git" / "objects"


def _applied_repo(state_path: Path, agent: str) -> Path:
    repo = applied_dir(state_path, agent)
    if repo.is_symlink() or not (repo / ".git").is_dir():
        raise RepoError(
            "no_repo",
            f"the applied repo of {agent} is missing ({repo})",
            "it is created when the agent is spawned (init_agent_repos)",
        )
    return repo


# ---------------------------------------------------------------------------------------------
# git in one agent's repos


def _applied_git(
    state_path: Path, agent: str, args: Sequence[str], *, env: Mapping[str, str] | None = None
) -> bytes:
    applied = _applied_repo(state_path, agent)
    return run_git(["-C", str(applied), *args], cwd=applied, env=env)


@contextlib.contextmanager
def _applied_lock(state_path: Path, agent: str) -> Iterator[Path]:
    """Serialise writers of one applied repo (threads and processes on this host)."""
    repo = _applied_repo(state_path, agent)
    with (repo / ".git" / "hive-c0re.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield repo
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# init


def _write_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically (a symlink at `path` is replaced, never followed)."""
    tmp = path.with_name(f".{path.name}.hive-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _check_existing_repo(path: Path, what: str) -> bool:
    """True if `path` already is a repo (leave it alone); False if absent; else RepoError."""
    if path.is_symlink():
        raise RepoError("not_a_repo", f"the {what} {path} is a symlink", "remove it")
    if not path.exists():
        return False
    if (path / ".git").is_dir() and not (path / ".git").is_symlink():
        return True
    if path.is_dir() and not any(path.iterdir()):
        return False  # an empty directory: the atomic rename below replaces it
    raise RepoError(
        "not_a_repo",
        f"the {what} {path} exists but is not a git repository",
        "move it away, or make it a git repository holding agent.nix and CLAUDE.md",
    )


def _create_repo(
    state_path: Path,
    final: Path,
    files: Mapping[str, str],
    message: str,
    *,
    local_config: Mapping[str, str] | None = None,
) -> None:
    """Build a one-commit repo in a private temp dir, then rename it into place atomically, so
    a crash never leaves a half-made repo and hive-c0re never runs porcelain git in a directory
    hm1nd could have prepared."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(state_path) / ".repo-tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.parent.name}-{final.name}-", dir=scratch))
    try:
        tmp.chmod(0o755)
        run_git(["init", "-q", "-b", BRANCH, str(tmp)])
        for key, value in (local_config or {}).items():
            run_git(["-C", str(tmp), "config", key, value])
        for name, text in files.items():
            _write_file(tmp / name, text.encode())
        run_git(["-C", str(tmp), "add", "--", *files])
        run_git(["-C", str(tmp), "commit", "-q", "--no-verify", "-m", message])
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # Someone made it meanwhile (a concurrent init): theirs stands.
            _check_existing_repo(final, final.parent.name + " repo")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def init_agent_repos(
    state_path: Path, agent: str, *, purpose: str, hyperhive_rev: str, hyperhive_flake_url: str
) -> None:
    """Create proposed/<agent> and applied/<agent> with the initial config. Idempotent: a repo
    that already exists is left as it is (a re-spawned agent keeps its config and pin)."""
    agent = checked_agent(agent)
    proposed = proposed_dir(state_path, agent)
    applied = applied_dir(state_path, agent)
    config = initial_config(agent, purpose)
    if not _check_existing_repo(applied, "applied repo"):
        pin = Pin(hyperhive_rev, hyperhive_flake_url, host_nix_system())
        flake = generate_flake(
            agent,
            hyperhive_flake_url=hyperhive_flake_url,
            hyperhive_rev=hyperhive_rev,
            system=pin.system,
        )
        _create_repo(
            state_path,
            applied,
            {**config, FLAKE_FILE: flake, PIN_FILE: pin.dumps()},
            f"Initial config of {agent} (hyperhive {hyperhive_rev[:12]})",
        )
    if not _check_existing_repo(proposed, "proposed repo"):
        _create_repo(
            state_path,
            proposed,
            config,
            f"Initial config of {agent}",
            local_config={"user.name": MANAGER_NAME, "user.email": f"{MANAGER_NAME}@localhost"},
        )


# ---------------------------------------------------------------------------------------------
# reading and validating proposed commits


def _check_sha_input(agent: str, sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_INPUT.match(sha):
        raise RepoError(
            "bad_sha",
            f"{sha!r} is not a commit sha: give 7 to 40 hex digits",
            f"in /agents/{agent}, `git rev-parse HEAD` prints the sha of the last commit",
        )
    return sha.lower()


def _disambiguate(applied: Path, objects: Path, agent: str, prefix: str) -> str:
    """The one commit among `objects` (a private copy of hm1nd's) whose id starts with `prefix`.

    Only hex is accepted: refs and revision expressions (HEAD, main, HEAD~1) are bad_sha, since
    the operator approves one exact commit; and only objects are searched, so a branch of the
    same name can never shadow a short sha."""
    env = {"GIT_OBJECT_DIRECTORY": str(objects)}
    git_dir = ["--git-dir", str(applied / ".git")]
    candidates = run_git([*git_dir, "rev-parse", f"--disambiguate={prefix}"], cwd=applied, env=env)
    oids = candidates.decode().split()
    commits: list[str] = []
    if oids:
        types = run_git(
            [*git_dir, "cat-file", "--batch-check=%(objectname) %(objecttype)"],
            cwd=applied,
            env=env,
            stdin="".join(f"{oid}\n" for oid in oids).encode(),
        )
        for line in types.decode().splitlines():
            oid, _, kind = line.partition(" ")
            if kind == "commit":
                commits.append(oid)
    if not commits:
        raise RepoError(
            "unknown_sha",
            f"no commit {prefix} in the proposed repo of {agent}",
            f"commit the change in /agents/{agent} first, and check the sha",
        )
    if len(commits) > 1:
        raise RepoError(
            "ambiguous_sha",
            f"{prefix} matches {len(commits)} commits in the proposed repo of {agent}",
            "give more digits of the sha (all 40 are always unambiguous)",
        )
    full = commits[0]
    if not FULL_SHA.match(full):
        raise RepoError("git_failed", f"unexpected object id {full!r} (is the repo SHA-256?)")
    return full


def _take(applied: Path, objects: Path, agent: str, commit: str) -> Snapshot:
    """Read `commit`, its tree and its config blobs from `objects`, each re-hashed; check them;
    store them in the applied repo under the commit's snapshot ref."""
    git_dir = applied / ".git"
    kind, content = read_verified(git_dir, objects, [commit], agent)[commit]
    if kind != "commit":
        raise RepoError("unknown_sha", f"{commit[:12]} of {agent} is a {kind}, not a commit")
    tree = commit_tree(content, commit, agent)
    tree_kind, tree_content = read_verified(git_dir, objects, [tree], agent)[tree]
    if tree_kind != "tree":
        raise RepoError("corrupt_object", f"the tree of commit {commit[:12]} is a {tree_kind}")
    entries = parse_tree(tree_content, tree, agent)
    wanted = sorted({e.oid for e in config_blob_entries(entries)})
    blobs = read_verified(git_dir, objects, wanted, agent)
    for oid, (blob_kind, _) in blobs.items():
        if blob_kind != "blob":
            raise RepoError(
                "not_config_only",
                f"commit {commit[:12]} of {agent} names a {blob_kind} {oid[:12]} as a file",
            )
    check_config(agent, commit, entries, {oid: data for oid, (_, data) in blobs.items()})
    store(applied, commit, tree, {tree: ("tree", tree_content), **blobs})
    return Snapshot(commit=commit, tree=tree, entries=entries)


def _snapshot(state_path: Path, agent: str, sha: str) -> Snapshot:
    """Proposed commit `sha` as hive-c0re holds it: taken (verified, checked, stored) on first
    use, and from then on read only from hive-c0re's copy (hyperhive.proposed_commit)."""
    agent = checked_agent(agent)
    prefix = _check_sha_input(agent, sha)
    objects = _proposed_objects(state_path, agent)
    applied = _applied_repo(state_path, agent)
    if FULL_SHA.match(prefix) and (tree := stored_tree(applied, prefix)) is not None:
        return Snapshot(commit=prefix, tree=tree, entries=stored_entries(applied, tree))
    with private_copy(objects, applied / ".git") as copy:
        full = _disambiguate(applied, copy, agent, prefix)
        if (tree := stored_tree(applied, full)) is not None:
            return Snapshot(commit=full, tree=tree, entries=stored_entries(applied, tree))
        return _take(applied, copy, agent, full)


def _snapshot_files(state_path: Path, agent: str, snap: Snapshot) -> dict[str, bytes]:
    """name → content of a snapshot's config files, from hive-c0re's objects, checked again
    (a snapshot taken by an older hyperhive meets today's rules too)."""
    applied = _applied_repo(state_path, agent)
    wanted = sorted({e.oid for e in config_blob_entries(snap.entries)})
    blobs = read_verified(applied / ".git", applied / ".git" / "objects", wanted, agent)
    return check_config(agent, snap.commit, snap.entries, {o: d for o, (_, d) in blobs.items()})


def resolve_sha(state_path: Path, agent: str, sha: str) -> str:
    """The full sha of the commit `sha` (7 to 40 hex digits) in the agent's proposed repo, once
    it is known to be an applicable config commit (taken into hive-c0re's storage)."""
    return _snapshot(state_path, agent, sha).commit


def _read_ref(git_dir: Path, name: str) -> str | None:
    """A loose or packed ref of the proposed repo, read as a file (no git, no symlinks)."""
    parts = name.split("/")
    if name != "HEAD" and (parts[0] != "refs" or any(p in ("", ".", "..") for p in parts)):
        return None
    loose = git_dir.joinpath(*parts)
    if loose.is_file() and not loose.is_symlink():
        return loose.read_text("utf-8", "replace")[:4096].strip()
    packed = git_dir / "packed-refs"
    if name != "HEAD" and packed.is_file() and not packed.is_symlink():
        for line in packed.read_text("utf-8", "replace").splitlines():
            oid, _, ref = line.partition(" ")
            if ref.strip() == name and FULL_SHA.match(oid):
                return oid
    return None


def proposed_head(state_path: Path, agent: str) -> str:
    """The commit checked out in the agent's proposed repo (HEAD), full sha.

    HEAD and its branch are read as files, without running git in hm1nd's repo, and the result
    must be an applicable config commit among its objects."""
    agent = checked_agent(agent)
    git_dir = _proposed_objects(state_path, agent).parent
    target = "HEAD"
    for _ in range(5):
        value = _read_ref(git_dir, target)
        if value is None:
            break
        if value.startswith("ref:"):
            target = value[4:].strip()
            continue
        if FULL_SHA.match(value):
            return resolve_sha(state_path, agent, value)
        break
    raise RepoError(
        "unknown_sha",
        f"the proposed repo of {agent} has no commit checked out (HEAD is {target})",
        f"commit in /agents/{agent}",
    )


def _applied_oids(state_path: Path, agent: str, rev: str = "HEAD") -> dict[str, str]:
    out = _applied_git(state_path, agent, ["ls-tree", "-z", "--full-tree", rev])
    oids: dict[str, str] = {}
    for record in out.split(b"\0"):
        meta, _, name = record.partition(b"\t")
        if meta and name.decode() in CONFIG_FILES:
            oids[name.decode()] = meta.decode().split()[2]
    return oids


def validate_commit(state_path: Path, agent: str, sha: str) -> list[str]:
    """Check that proposed commit `sha` is applicable; return the config files whose content
    differs from the applied repo's HEAD (in CONFIG_FILES order; [] = nothing to apply).

    Applicable: hyperhive.config_tree. A file the commit drops (settings.json) counts as
    changed. The commit is taken into hive-c0re's storage here, so what is later shown and
    applied is what was checked."""
    snap = _snapshot(state_path, agent, sha)
    _snapshot_files(state_path, agent, snap)
    applied = _applied_oids(state_path, agent)
    mine = {e.name: e.oid for e in snap.entries}
    return [name for name in CONFIG_FILES if applied.get(name) != mine.get(name)]


def diff_against_applied(state_path: Path, agent: str, sha: str) -> str:
    """Unified diff (git format) of the config files: applied HEAD → proposed commit `sha`, as
    hive-c0re holds it."""
    snap = _snapshot(state_path, agent, sha)
    out = _applied_git(
        state_path,
        agent,
        [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "HEAD",
            snap.tree,
            "--",
            *CONFIG_FILES,
        ],
    )
    return out.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# writing the applied repo


def _one_line(text: str) -> str:
    return " ".join(text.split())


def applied_head(state_path: Path, agent: str) -> str:
    """The applied repo's HEAD commit (full sha)."""
    return _applied_git(state_path, agent, ["rev-parse", "--verify", "HEAD"]).decode().strip()


def applied_claude_files(state_path: Path, agent: str) -> AppliedClaudeFiles:
    """CLAUDE.md and settings.json as applied (the applied work tree, which only hive-c0re
    writes), read under the apply lock (shared) so a turn never sees half of an apply."""
    repo = _applied_repo(state_path, checked_agent(agent))
    with (repo / ".git" / "hive-c0re.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        try:
            return AppliedClaudeFiles(
                instructions=_read_no_follow(repo / INSTRUCTIONS_FILE) or b"",
                settings=_read_no_follow(repo / SETTINGS_FILE),
                agent_nix=_read_no_follow(repo / AGENT_NIX_FILE) or b"",
            )
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_no_follow(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _reset_to_head(state_path: Path, agent: str) -> None:
    """Drop whatever an interrupted write left in the applied work tree or index."""
    _applied_git(state_path, agent, ["reset", "-q", "--hard", "HEAD"])


def apply_commit(state_path: Path, agent: str, sha: str, *, approver: str) -> str | None:
    """Copy the config files of proposed commit `sha` into the applied repo and commit them.

    Returns the new applied commit, or None when the applied HEAD already has exactly that
    content (a repeated or retried apply is a no-op). The commit message names the proposed
    sha and the approver.
    """
    agent = checked_agent(agent)
    approver = _one_line(approver) or "unknown"
    with _applied_lock(state_path, agent) as repo:
        snap = _snapshot(state_path, agent, sha)
        full = snap.commit
        blobs = _snapshot_files(state_path, agent, snap)
        mine = {e.name: e.oid for e in snap.entries}
        _reset_to_head(state_path, agent)
        current = _applied_oids(state_path, agent)
        if all(current.get(name) == mine.get(name) for name in CONFIG_FILES):
            return None
        for name in CONFIG_FILES:
            if name in blobs:
                _write_file(repo / name, blobs[name])
            elif name in current:
                (repo / name).unlink(missing_ok=True)
        _applied_git(state_path, agent, ["add", "-A", "--", *CONFIG_FILES])
        message = (
            f"Apply {agent} config {full[:12]}, approved by {approver}\n\n"
            f"Proposed-Commit: {full}\nApproved-By: {approver}\n"
        )
        _applied_git(state_path, agent, ["commit", "-q", "--no-verify", "-m", message])
        return applied_head(state_path, agent)


def _resolve_applied(state_path: Path, agent: str, sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_INPUT.match(sha):
        raise RepoError("bad_sha", f"{sha!r} is not a commit sha: give 7 to 40 hex digits")
    try:
        out = _applied_git(
            state_path, agent, ["rev-parse", "--verify", f"{sha.lower()}^{{commit}}"]
        )
    except RepoError as exc:
        raise RepoError(
            "unknown_sha", f"no commit {sha} in the applied repo of {agent}", exc.what
        ) from exc
    return out.decode().strip()


def revert_applied(state_path: Path, agent: str, to_sha: str) -> None:
    """Reset the applied repo (branch, index and files) to its commit `to_sha`. Idempotent."""
    agent = checked_agent(agent)
    with _applied_lock(state_path, agent):
        full = _resolve_applied(state_path, agent, to_sha)
        _applied_git(state_path, agent, ["reset", "-q", "--hard", full])


def _read_pin(state_path: Path, agent: str) -> Pin:
    _applied_repo(state_path, agent)  # no_repo, not no_pin, when the agent has no repos
    try:
        raw = _applied_git(state_path, agent, ["cat-file", "blob", f"HEAD:{PIN_FILE}"])
        return Pin.loads(raw)
    except (RepoError, ValueError, KeyError, TypeError) as exc:
        raise RepoError(
            "no_pin",
            f"the applied repo of {agent} has no readable {PIN_FILE}",
            "it is written by init_agent_repos; re-pin with set_recorded_rev and a flake URL",
        ) from exc


def recorded_rev(state_path: Path, agent: str) -> str:
    """The hyperhive revision the agent's flake is pinned to (as committed in applied)."""
    return _read_pin(state_path, agent).hyperhive_rev


def set_recorded_rev(
    state_path: Path, agent: str, rev: str, *, hyperhive_flake_url: str | None = None
) -> str | None:
    """Re-pin the agent's flake to hyperhive `rev` (and optionally a new flake URL): regenerate
    flake.nix, record the rev, commit. Returns the new applied commit, or None if already so."""
    agent = checked_agent(agent)
    with _applied_lock(state_path, agent) as repo:
        _reset_to_head(state_path, agent)
        try:
            old = _read_pin(state_path, agent)
        except RepoError:
            if not hyperhive_flake_url:
                raise
            old = Pin("", hyperhive_flake_url, host_nix_system())
        pin = Pin(rev, hyperhive_flake_url or old.hyperhive_flake_url, old.system)
        flake = generate_flake(
            agent,
            hyperhive_flake_url=pin.hyperhive_flake_url,
            hyperhive_rev=rev,
            system=pin.system,
        )
        wanted = {FLAKE_FILE: flake.encode(), PIN_FILE: pin.dumps().encode()}
        if all(
            (repo / name).is_file()
            and not (repo / name).is_symlink()
            and (repo / name).read_bytes() == data
            for name, data in wanted.items()
        ):
            return None
        for name, data in wanted.items():
            _write_file(repo / name, data)
        _applied_git(state_path, agent, ["add", "--", *wanted])
        message = f"Pin hyperhive {rev[:12]} (was {old.hyperhive_rev[:12] or 'unpinned'})\n"
        _applied_git(state_path, agent, ["commit", "-q", "--no-verify", "-m", message])
        return applied_head(state_path, agent)
