"""What the config-repo modules share: RepoError, agent names checked in its terms, and the real
`git` CLI run in a fixed environment (no system or user config, no hooks, no prompts, hive-c0re
as the identity).

hyperhive.config_repo (the repos) and hyperhive.agent_flake (the flake and pin in them) both
raise RepoError and run git; it lives here, below both, so neither imports the other's errors.

Everything here is synchronous and blocking; nothing runs at import.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from hyperhive.domain import InvalidName, check_agent_name
from hyperhive.errors import HiveError

HIVE_GIT_NAME = "hive-c0re"
HIVE_GIT_EMAIL = "hive-c0re@localhost"

GIT_TIMEOUT_S = 60.0
# A full SHA-1 object id as git prints it (lower-case hex).
FULL_SHA = re.compile(r"\A[0-9a-f]{40}\Z")

# Error codes that may succeed when retried (a busy or flaky filesystem). Everything else is a
# verdict about the input and will fail the same way every time.
RETRYABLE_CODES = frozenset({"git_failed"})


class RepoError(HiveError):
    """A config-repo operation failed. `code` says why, for programs; the message, for people.

    Codes: bad_agent, bad_sha, unknown_sha, ambiguous_sha, not_config_only, missing_config,
    symlink, path_outside, too_large, not_text, bad_settings, no_repo, not_a_repo, no_pin,
    no_flake_url, git_failed.
    """

    def __init__(self, code: str, what: str, hint: str = "") -> None:
        super().__init__(what, hint)
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


def checked_agent(agent: str) -> str:
    """`agent` if it is a valid agent name, else RepoError(bad_agent)."""
    try:
        return check_agent_name(agent)
    except InvalidName as exc:
        raise RepoError("bad_agent", str(exc)) from exc


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A fixed environment: no system or user config, no prompts, hive-c0re as the identity."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": "/nonexistent",
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_AUTHOR_NAME": HIVE_GIT_NAME,
        "GIT_AUTHOR_EMAIL": HIVE_GIT_EMAIL,
        "GIT_COMMITTER_NAME": HIVE_GIT_NAME,
        "GIT_COMMITTER_EMAIL": HIVE_GIT_EMAIL,
    }
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> bytes:
    """Run git; return stdout. A non-zero exit raises RepoError(git_failed) with git's stderr."""
    cmd = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=_git_env(env),
            input=stdin,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RepoError(
            "git_failed", "git is not installed or not on PATH", "install git (hive-c0re needs it)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise RepoError(
            "git_failed", f"git {' '.join(args[:2])} took longer than {GIT_TIMEOUT_S:.0f}s"
        ) from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise RepoError(
            "git_failed",
            f"git {' '.join(args[:2])} failed (exit {proc.returncode}): {err}",
            "see git's message above",
        )
    return proc.stdout
