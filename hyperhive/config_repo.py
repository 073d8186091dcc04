"""Per-agent config repos (DESIGN §6), with the real `git` CLI (run by hyperhive.repo_git).

Under the state dir, per agent:

- `proposed/<name>` — a git repo the manager (hm1nd) edits at /agents/<name>. hm1nd also controls
  everything inside it, `.git/config`, hooks and refs included, so hive-c0re treats it as
  untrusted input: after creating it, hive-c0re never runs a git command *in* it. Commits are
  read by object id only, through a git dir hive-c0re owns (the applied repo's) with
  `GIT_OBJECT_DIRECTORY` pointing at the proposed repo's objects: no config, hooks, refs,
  replace refs or promisor remotes of the proposed repo are consulted, and a short sha can never
  be shadowed by a branch of the same name.
- `applied/<name>` — a git repo only hive-c0re writes. It holds the approved config files plus
  the generated `flake.nix` and `.hive-pin.json` (the hyperhive revision this agent's container is
  built from, its flake URL and the Nix system), so it is also the agent's flake:
  `nixosConfigurations.container` = hyperhive's agent module + `./agent.nix`. Their text comes
  from hyperhive.agent_flake; this module commits them (init_agent_repos, set_recorded_rev).

The config is CONFIG_FILES: agent.nix (the container's NixOS module), CLAUDE.md (the agent's
instructions) and settings.json (Claude Code's settings; optional, as repos made before it existed
lack it; hyperhive.agent_config reads it). A proposed commit is applicable only if its top-level
tree holds the required ones and possibly settings.json, as regular blobs, and nothing else: no
other file (another agent's name, a README, a `.gitattributes`), no subdirectory, no submodule,
no symlink (even one named agent.nix), no `..`/`.git` entry; and its settings.json must parse.
Apply copies the blobs of that commit into the applied repo (removing a settings.json the commit
dropped) and commits them, naming the proposed sha and the approver; applying content the applied
repo already has is a no-op.

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
from dataclasses import dataclass
from pathlib import Path

from hyperhive.agent_config import (
    INSTRUCTIONS_FILE,
    SETTINGS_FILE,
    AppliedClaudeFiles,
    ClaudeSettingsError,
    parse_claude_settings,
)
from hyperhive.agent_flake import FLAKE_FILE, PIN_FILE, Pin, generate_flake, host_nix_system
from hyperhive.config_templates import AGENT_NIX_FILE, initial_config
from hyperhive.domain import MANAGER_NAME, InvalidName, check_agent_name
from hyperhive.repo_git import FULL_SHA, RepoError, checked_agent, run_git

CONFIG_FILES: tuple[str, ...] = (AGENT_NIX_FILE, INSTRUCTIONS_FILE, SETTINGS_FILE)
# settings.json is optional: repos made before it existed do not have it.
REQUIRED_CONFIG_FILES: tuple[str, ...] = (AGENT_NIX_FILE, INSTRUCTIONS_FILE)
# A config file larger than this is refused (code too_large): it is a NixOS module or a page of
# instructions, and it is shown whole in the approval's diff.
MAX_CONFIG_BYTES = 1 << 20

BRANCH = "main"

_SHA_INPUT = re.compile(r"\A[0-9a-fA-F]{7,40}\Z")
_REGULAR_MODES = ("100644", "100755")
_SYMLINK_MODE = "120000"
_SUBMODULE_MODE = "160000"


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


def _proposed_git(
    state_path: Path, agent: str, args: Sequence[str], *, stdin: bytes | None = None
) -> bytes:
    """git over the proposed repo's objects only, driven from the applied repo's (trusted) git
    dir: the proposed repo's config, hooks and refs are never read."""
    objects = _proposed_objects(state_path, agent)
    applied = _applied_repo(state_path, agent)
    return run_git(
        ["--git-dir", str(applied / ".git"), *args],
        cwd=applied,
        env={"GIT_OBJECT_DIRECTORY": str(objects.resolve())},
        stdin=stdin,
    )


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


@dataclass(frozen=True)
class _Entry:
    mode: str
    kind: str
    oid: str
    size: int | None
    name: str


def _ls_tree(output: bytes) -> list[_Entry]:
    entries = []
    for record in output.split(b"\0"):
        if not record:
            continue
        meta, _, raw_name = record.partition(b"\t")
        mode, kind, oid, size = meta.decode().split()
        entries.append(
            _Entry(
                mode=mode,
                kind=kind,
                oid=oid,
                size=None if size == "-" else int(size),
                name=raw_name.decode("utf-8", "replace"),
            )
        )
    return entries


def resolve_sha(state_path: Path, agent: str, sha: str) -> str:
    """The full sha of the commit `sha` (7 to 40 hex digits) in the agent's proposed repo.

    Only hex is accepted: refs and revision expressions (HEAD, main, HEAD~1) are bad_sha, since
    the operator approves one exact commit.
    """
    agent = checked_agent(agent)
    if not isinstance(sha, str) or not _SHA_INPUT.match(sha):
        raise RepoError(
            "bad_sha",
            f"{sha!r} is not a commit sha: give 7 to 40 hex digits",
            f"in /agents/{agent}, `git rev-parse HEAD` prints the sha of the last commit",
        )
    prefix = sha.lower()
    candidates = _proposed_git(state_path, agent, ["rev-parse", f"--disambiguate={prefix}"])
    oids = candidates.decode().split()
    commits: list[str] = []
    if oids:
        types = _proposed_git(
            state_path,
            agent,
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            stdin="".join(f"{oid}\n" for oid in oids).encode(),
        )
        for line in types.decode().splitlines():
            oid, _, kind = line.partition(" ")
            if kind == "commit":
                commits.append(oid)
    if not commits:
        raise RepoError(
            "unknown_sha",
            f"no commit {sha} in the proposed repo of {agent}",
            f"commit the change in /agents/{agent} first, and check the sha",
        )
    if len(commits) > 1:
        raise RepoError(
            "ambiguous_sha",
            f"{sha} matches {len(commits)} commits in the proposed repo of {agent}",
            "give more digits of the sha (all 40 are always unambiguous)",
        )
    full = commits[0]
    if not FULL_SHA.match(full):
        raise RepoError("git_failed", f"unexpected object id {full!r} (is the repo SHA-256?)")
    return full


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
    must be a commit among its objects.
    """
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


def _tree_problems(agent: str, entries: Sequence[_Entry]) -> list[tuple[str, str]]:
    """(code, problem) for every entry that is not a config file, then for missing ones."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in entries:
        name = entry.name
        if (
            name in ("", ".", "..")
            or "/" in name
            or "\\" in name
            or name.lower() == ".git"
            or any(ord(c) < 32 for c in name)
        ):
            problems.append(("path_outside", f"{name!r} is a path outside the agent's config"))
        elif entry.mode == _SYMLINK_MODE:
            problems.append(("symlink", f"{name} is a symlink; config files must be regular files"))
        elif entry.mode == _SUBMODULE_MODE or entry.kind == "commit":
            problems.append(("not_config_only", f"{name} is a submodule"))
        elif entry.kind == "tree":
            problems.append(("not_config_only", f"{name}/ is a directory"))
        elif name not in CONFIG_FILES:
            other = ""
            with contextlib.suppress(InvalidName):
                if check_agent_name(name) != agent:
                    other = " (named like another agent: each agent has its own repo)"
            problems.append(("not_config_only", f"{name} is not a config file{other}"))
        elif entry.mode not in _REGULAR_MODES or entry.kind != "blob":
            problems.append(("not_config_only", f"{name} has unexpected mode {entry.mode}"))
        elif entry.size is not None and entry.size > MAX_CONFIG_BYTES:
            problems.append(
                ("too_large", f"{name} is {entry.size} bytes (at most {MAX_CONFIG_BYTES})")
            )
        else:
            seen.add(name)
    for name in REQUIRED_CONFIG_FILES:
        if name not in seen and not any(e.name == name for e in entries):
            problems.append(("missing_config", f"{name} is missing"))
    names = [e.name for e in entries]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(("not_config_only", f"{name} appears more than once"))
    return problems


_CODE_ORDER = ("path_outside", "symlink", "not_config_only", "too_large", "missing_config")


def _checked_commit(state_path: Path, agent: str, sha: str) -> tuple[str, dict[str, _Entry]]:
    """Resolve and validate `sha`; return its full sha and its config-file entries."""
    agent = checked_agent(agent)
    full = resolve_sha(state_path, agent, sha)
    entries = _ls_tree(
        _proposed_git(state_path, agent, ["ls-tree", "-z", "--long", "--full-tree", full])
    )
    problems = _tree_problems(agent, entries)
    if problems:
        code = min((c for c, _ in problems), key=_CODE_ORDER.index)
        listing = "; ".join(p for _, p in problems)
        raise RepoError(
            code,
            f"commit {full[:12]} of {agent} is not a config-only commit: {listing}",
            f"a commit in /agents/{agent} must hold {' and '.join(REQUIRED_CONFIG_FILES)}, "
            f"optionally {SETTINGS_FILE} (regular files at the top level), and nothing else",
        )
    return full, {e.name: e for e in entries}


def _read_blobs(state_path: Path, agent: str, entries: Mapping[str, _Entry]) -> dict[str, bytes]:
    """The commit's config files (those it has), checked: UTF-8 text, a settings.json that
    parses."""
    blobs: dict[str, bytes] = {}
    for name in CONFIG_FILES:
        if name not in entries:
            continue
        data = _proposed_git(state_path, agent, ["cat-file", "blob", entries[name].oid])
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RepoError(
                "not_text", f"{name} in the proposed commit is not UTF-8 text", "save it as UTF-8"
            ) from exc
        blobs[name] = data
    try:
        parse_claude_settings(blobs.get(SETTINGS_FILE))
    except ClaudeSettingsError as exc:
        raise RepoError("bad_settings", exc.what, exc.hint) from None
    return blobs


def _applied_oids(state_path: Path, agent: str, rev: str = "HEAD") -> dict[str, str]:
    out = _applied_git(state_path, agent, ["ls-tree", "-z", "--long", rev, "--", *CONFIG_FILES])
    return {e.name: e.oid for e in _ls_tree(out)}


def validate_commit(state_path: Path, agent: str, sha: str) -> list[str]:
    """Check that proposed commit `sha` is applicable; return the config files whose content
    differs from the applied repo's HEAD (in CONFIG_FILES order; [] = nothing to apply).

    Applicable: the commit's top-level tree holds REQUIRED_CONFIG_FILES and maybe settings.json,
    each a regular file (mode 100644/100755) of at most MAX_CONFIG_BYTES of UTF-8, and its
    settings.json parses; anything else (another file, a directory, a submodule, a symlink, a
    `..` or `.git` entry, a missing config file) raises RepoError. A file the commit drops
    (settings.json) counts as changed.
    """
    _, entries = _checked_commit(state_path, agent, sha)
    _read_blobs(state_path, agent, entries)
    applied = _applied_oids(state_path, agent)
    return [name for name in CONFIG_FILES if applied.get(name) != _oid(entries, name)]


def _oid(entries: Mapping[str, _Entry], name: str) -> str | None:
    entry = entries.get(name)
    return entry.oid if entry is not None else None


def diff_against_applied(state_path: Path, agent: str, sha: str) -> str:
    """Unified diff (git format) of the config files: applied HEAD → proposed commit `sha`."""
    full, _ = _checked_commit(state_path, agent, sha)
    objects = _proposed_objects(state_path, agent).resolve()
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
            full,
            "--",
            *CONFIG_FILES,
        ],
        env={"GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects)},
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
        full, entries = _checked_commit(state_path, agent, sha)
        blobs = _read_blobs(state_path, agent, entries)
        _reset_to_head(state_path, agent)
        current = _applied_oids(state_path, agent)
        if all(current.get(name) == _oid(entries, name) for name in CONFIG_FILES):
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
