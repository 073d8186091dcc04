"""What an applicable config commit holds, checked over its (verified) tree and blobs.

The config is CONFIG_FILES: agent.nix (the container's NixOS module), CLAUDE.md (the agent's
instructions) and settings.json (Claude Code's settings; optional, as repos made before it existed
lack it). A commit is applicable only if its top-level tree holds the required ones and possibly
settings.json, as regular blobs of UTF-8 text, each named once, and nothing else: no other file
(another agent's name, a README, a `.gitattributes`), no subdirectory, no submodule, no symlink
(even one named agent.nix), no `..`/`.git` entry; and its settings.json must parse.

Pure functions: no I/O.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from hyperhive.agent_config import (
    INSTRUCTIONS_FILE,
    SETTINGS_FILE,
    ClaudeSettingsError,
    parse_claude_settings,
)
from hyperhive.config_templates import AGENT_NIX_FILE
from hyperhive.domain import InvalidName, check_agent_name
from hyperhive.proposed_commit import TreeEntry
from hyperhive.repo_git import RepoError

CONFIG_FILES: tuple[str, ...] = (AGENT_NIX_FILE, INSTRUCTIONS_FILE, SETTINGS_FILE)
# settings.json is optional: repos made before it existed do not have it.
REQUIRED_CONFIG_FILES: tuple[str, ...] = (AGENT_NIX_FILE, INSTRUCTIONS_FILE)
# A config file larger than this is refused (code too_large): it is a NixOS module or a page of
# instructions, and it is shown whole in the approval's diff, which travels in Temporal payloads
# (2 MiB at most each): three files, old and new, stay well under that.
MAX_CONFIG_BYTES = 128 << 10

REGULAR_MODES = ("100644", "100755")
_SYMLINK_MODE = "120000"
_CODE_ORDER = ("path_outside", "symlink", "not_config_only", "too_large", "missing_config")


def config_blob_entries(entries: Sequence[TreeEntry]) -> list[TreeEntry]:
    """The entries whose content must be read to check the commit: config-named regular blobs."""
    return [e for e in entries if e.name in CONFIG_FILES and e.mode in REGULAR_MODES]


def _problem(agent: str, entry: TreeEntry, size: int | None) -> tuple[str, str] | None:
    name = entry.name
    if (
        name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or name.lower() == ".git"
        or any(ord(c) < 32 for c in name)
    ):
        return ("path_outside", f"{name!r} is a path outside the agent's config")
    if entry.mode == _SYMLINK_MODE:
        return ("symlink", f"{name} is a symlink; config files must be regular files")
    if entry.kind == "commit":
        return ("not_config_only", f"{name} is a submodule")
    if entry.kind == "tree":
        return ("not_config_only", f"{name}/ is a directory")
    if name not in CONFIG_FILES:
        other = ""
        with contextlib.suppress(InvalidName):
            if check_agent_name(name) != agent:
                other = " (named like another agent: each agent has its own repo)"
        return ("not_config_only", f"{name} is not a config file{other}")
    if entry.mode not in REGULAR_MODES:
        return ("not_config_only", f"{name} has unexpected mode {entry.mode}")
    if size is not None and size > MAX_CONFIG_BYTES:
        return ("too_large", f"{name} is {size} bytes (at most {MAX_CONFIG_BYTES})")
    return None


def tree_problems(
    agent: str, entries: Sequence[TreeEntry], sizes: Mapping[str, int]
) -> list[tuple[str, str]]:
    """(code, problem) for every entry that is not a config file, then for missing and
    repeated ones. `sizes` maps blob ids to their sizes."""
    problems = [
        found for e in entries if (found := _problem(agent, e, sizes.get(e.oid))) is not None
    ]
    names = [e.name for e in entries]
    for name in REQUIRED_CONFIG_FILES:
        if name not in names:
            problems.append(("missing_config", f"{name} is missing"))
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(("not_config_only", f"{name} appears more than once"))
    return problems


def check_config(
    agent: str, commit: str, entries: Sequence[TreeEntry], blobs: Mapping[str, bytes]
) -> dict[str, bytes]:
    """name → content of the commit's config files, or RepoError saying what is wrong.

    `blobs` maps the ids of config_blob_entries(entries) to their (verified) content."""
    problems = tree_problems(agent, entries, {oid: len(data) for oid, data in blobs.items()})
    if problems:
        code = min((c for c, _ in problems), key=_CODE_ORDER.index)
        listing = "; ".join(p for _, p in problems)
        raise RepoError(
            code,
            f"commit {commit[:12]} of {agent} is not a config-only commit: {listing}",
            f"a commit in /agents/{agent} must hold {' and '.join(REQUIRED_CONFIG_FILES)}, "
            f"optionally {SETTINGS_FILE} (regular files at the top level), and nothing else",
        )
    files = {e.name: blobs[e.oid] for e in entries}
    for name, data in files.items():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise RepoError(
                "not_text", f"{name} in the proposed commit is not UTF-8 text", "save it as UTF-8"
            ) from None
    try:
        parse_claude_settings(files.get(SETTINGS_FILE))
    except ClaudeSettingsError as exc:
        raise RepoError("bad_settings", exc.what, exc.hint) from None
    return files
