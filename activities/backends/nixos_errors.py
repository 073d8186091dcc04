"""What a failed `nixos-container` call means, and what the operator is told about it.

Exit codes are unstable (Perl `die` exits with errno): any non-zero is a failure and its kind is
read from stderr, preferring the last line (the `die` message) over the nix output before it,
which may say "does not exist" about a file. The message then carries the last lines of that
output: nix prints the real error (an evaluation error, a builder's last log lines) at the end,
just before the CLI's own `die`.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass

from activities.backends.base import BackendError, BackendErrorKind

log = logging.getLogger(__name__)

Kind = BackendErrorKind

# How much of the CLI's output an error message carries: nix's error block (its "last 25 log
# lines" of a failed builder, the failed derivations, the CLI's die) fits; progress lines before
# it do not matter. Bounded in characters too, so that the message, its hint included, fits the
# approval note and notice it ends up in.
LAST_LINES = 25
LAST_LINES_CHARS = 1500
# hive-c0re's log gets the whole output of a failed call, up to this much of its end.
LOGGED_CHARS = 64 * 1024

# The CLI's own messages (its `die`s), most specific first.
_CLASSIFY: tuple[tuple[re.Pattern[str], BackendErrorKind], ...] = (
    (re.compile(r"container ‘[^’]*’ already exists"), Kind.ALREADY_EXISTS),
    (re.compile(r"container ‘[^’]*’ does not exist"), Kind.NOT_FOUND),
    (re.compile(r"container name ‘[^’]*’ is too long"), Kind.NAME_TOO_LONG),
    (re.compile(r"invalid container name"), Kind.INVALID_NAME),
    (re.compile(r"failed to (build|set)( initial)? container"), Kind.BUILD_FAILED),
    (re.compile(r"failed to start container"), Kind.START_FAILED),
    (re.compile(r"failed to (stop|terminate) container"), Kind.STOP_FAILED),
    (re.compile(r"failed to reload container"), Kind.UPDATE_FAILED),
    (re.compile(r"unable to get container's main PID"), Kind.NOT_RUNNING),
    (re.compile(r"Permission denied|Operation not permitted|must be root"), Kind.UNAVAILABLE),
)

_SUMMARY = {
    Kind.ALREADY_EXISTS: "container {name} already exists",
    Kind.NOT_FOUND: "container {name} does not exist",
    Kind.NAME_TOO_LONG: "container name {name} is too long for nixos-container (at most 11)",
    Kind.INVALID_NAME: "nixos-container refused the container name {name}",
    Kind.BUILD_FAILED: "building container {name} from its flake failed",
    Kind.START_FAILED: "container {name} failed to start",
    Kind.STOP_FAILED: "container {name} failed to stop",
    Kind.UPDATE_FAILED: "updating container {name} failed",
    Kind.NOT_RUNNING: "container {name} is not running",
    Kind.UNAVAILABLE: "nixos-container cannot manage containers here",
    Kind.FAILED: "nixos-container {verb} {name} failed",
}

HINTS = {
    Kind.ALREADY_EXISTS: "destroy it first if it is to be made afresh",
    Kind.NOT_FOUND: "spawn the agent first; if it exists, check that the backend's conf_dir is "
    "the host's nixos-container dir",
    Kind.NAME_TOO_LONG: "agent names have at most 9 characters (h-<name> must fit in 11)",
    Kind.INVALID_NAME: "agent names use lowercase letters, digits and '-'",
    Kind.BUILD_FAILED: "nothing of the container was left behind; fix what nix's error above "
    "points at (the agent's agent.nix in its config repo, or the hyperhive flake its flake.nix "
    "pins), then spawn the agent again",
    Kind.START_FAILED: "see `systemctl status container@{name}` and "
    "`journalctl -u container@{name}`",
    Kind.STOP_FAILED: "see `journalctl -u container@{name}`; `nixos-container terminate {name}` "
    "kills it",
    Kind.UPDATE_FAILED: "see the lines above and `journalctl -u container@{name}`; the update "
    "can be applied again",
    Kind.NOT_RUNNING: "start the container first",
    Kind.UNAVAILABLE: "the nixos backend needs NixOS with boot.enableContainers = true and "
    "hive-c0re running as root; elsewhere set HIVE_CONTAINER_BACKEND=bwrap",
    Kind.FAILED: "see the lines above; `journalctl -u container@{name}` may say more",
}

# An update whose build failed: the running container is untouched.
UPDATE_BUILD_HINT = (
    "the container keeps its previous system; fix what nix's error above points at (the "
    "agent's agent.nix, or the hyperhive flake its flake.nix pins) and apply again"
)


def classify(stderr: str) -> BackendErrorKind | None:
    """The kind of a nixos-container failure from its stderr, or None if unrecognized."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for text in (lines[-1] if lines else "", stderr):
        for pattern, kind in _CLASSIFY:
            if pattern.search(text):
                return kind
    return None


def last_lines(text: str, lines: int = LAST_LINES, chars: int = LAST_LINES_CHARS) -> list[str]:
    """The last non-blank `lines` lines of `text`, at most `chars` characters in all (a longer
    last line keeps its end). When lines were left out, a line says how many, after nix's first
    `error:` line if that was one of them: it names what failed (the derivation, the file)."""
    every = [line.rstrip() for line in text.splitlines() if line.strip()]
    kept = every[-lines:]
    start = len(every) - len(kept)
    first_error = next((i for i, line in enumerate(every) if line.startswith("error:")), None)
    lead = (
        [_clip(every[first_error], chars // 4)]
        if first_error is not None and first_error < start
        else []
    )
    while len(kept) > 1 and sum(len(line) + 1 for line in lead + kept) > chars:
        kept.pop(0)
    kept[:1] = [_clip(line, chars) for line in kept[:1]]
    left_out = len(every) - len(kept) - len(lead)
    if left_out:
        return [*lead, f"… ({left_out} lines left out here are in hive-c0re's log)", *kept]
    return [*lead, *kept]


def _clip(line: str, chars: int) -> str:
    """`line`'s end, at most `chars` characters (nix puts the point at the end)."""
    return line if len(line) <= chars else "…" + line[-(chars - 1) :]


@dataclass(frozen=True)
class CliResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def verb(self) -> str:
        return self.argv[1] if len(self.argv) > 1 else ""

    @property
    def container(self) -> str:
        return self.argv[2] if len(self.argv) > 2 else ""


def failure(result: CliResult, kind: BackendErrorKind, hint: str = "") -> BackendError:
    """The error for a failed call: what failed, the command and its exit code, the last lines
    it printed, what to do. Its whole output goes to hive-c0re's log."""
    name = result.container
    command = shlex.join(result.argv)
    output = "\n".join(part.rstrip() for part in (result.stdout, result.stderr) if part.strip())
    log.warning(
        "`%s` exited with %d:\n%s", command, result.returncode, output[-LOGGED_CHARS:] or "(none)"
    )
    said = last_lines(result.stderr) or last_lines(result.stdout) or ["no output"]
    what = f"{_SUMMARY[kind].format(name=name, verb=result.verb)} (`{command}` exited with "
    if len(said) == 1:
        what += f"{result.returncode}): {said[0]}"
    else:
        what += f"{result.returncode}); the end of its output:\n"
        what += "\n".join(f"  {line}" for line in said)
    return BackendError(kind, what, hint or HINTS[kind].format(name=name))
