"""Which container failures are retried, and what the operator reads about a failed build."""

from __future__ import annotations

import pytest

from activities.backends.base import PERMANENT, BackendError, BackendErrorKind
from activities.backends.nixos_errors import (
    LAST_LINES,
    LAST_LINES_CHARS,
    CliResult,
    classify,
    failure,
    last_lines,
)

Kind = BackendErrorKind
CLI = "/run/current-system/sw/bin/nixos-container"
FLAKE = "/var/lib/hyperhive/applied/bob"
CREATE = ["nixos-container", "create", "h-bob", "--flake", f"{FLAKE}#container"]

# What a real failed `create --flake` prints (Nix 2.2x, REFERENCE §4): nix's progress, the
# failed builder's last log lines, the failed dependency, then the CLI's `die`.
BUILD_FAILED = (
    "host IP is 10.233.1.1, container IP is 10.233.1.2\n"
    "these 3 derivations will be built:\n"
    "  /nix/store/aaaa-etc.drv\n"
    "  /nix/store/bbbb-system-units.drv\n"
    "  /nix/store/cccc-nixos-system-container-26.05.drv\n"
    "building '/nix/store/aaaa-etc.drv'...\n"
    "error: builder for '/nix/store/aaaa-etc.drv' failed with exit code 1;\n"
    "       last 25 log lines:\n"
    + "".join(f"       > step {i}\n" for i in range(1, 25))
    + "       > error: collision between `/nix/store/x-a/bin/tool' and `/nix/store/y-b/bin/tool'\n"
    "       For full logs, run:\n"
    "         nix log /nix/store/aaaa-etc.drv\n"
    "error: 1 dependencies of derivation '/nix/store/cccc-nixos-system-container-26.05.drv' "
    "failed to build\n"
    f"{CLI}: failed to build container from flake '{FLAKE}'\n"
)


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (BUILD_FAILED, Kind.BUILD_FAILED),
        (f"{CLI}: failed to build initial container configuration\n", Kind.BUILD_FAILED),
        (f"{CLI}: failed to set container configuration\n", Kind.BUILD_FAILED),
        (f"{CLI}: container ‘h-bob’ does not exist\n", Kind.NOT_FOUND),
        (f"{CLI}: container ‘h-bob’ already exists\n", Kind.ALREADY_EXISTS),
        (f"{CLI}: container name ‘h-waytoolong’ is too long\n", Kind.NAME_TOO_LONG),
        (f"{CLI}: invalid container name\n", Kind.INVALID_NAME),
        (
            f"Job for container@h-bob.service failed.\n{CLI}: failed to start container\n",
            Kind.START_FAILED,
        ),
        (f"{CLI}: failed to reload container\n", Kind.UPDATE_FAILED),
        ("unable to get container's main PID\n", Kind.NOT_RUNNING),
        ("mkdir /etc/nixos-containers: Permission denied\n", Kind.UNAVAILABLE),
        (f"Died at {CLI} line 181.\n", None),
        ("", None),
    ],
)
def test_classify_reads_the_cli_s_die(stderr: str, kind: Kind | None) -> None:
    assert classify(stderr) is kind


def test_a_builder_log_that_mentions_a_missing_file_is_still_a_build_failure() -> None:
    # Only the last line (the CLI's die) decides when it says something.
    stderr = BUILD_FAILED.replace(
        "step 3", "cp: 'x': Permission denied; container ‘q’ does not exist"
    )
    assert classify(stderr) is Kind.BUILD_FAILED


def test_what_is_permanent() -> None:
    """Retrying cannot fix a build error (the same flake builds the same way: nix has retried its
    downloads already), a name, a missing container, a host without nixos-container or a path
    nspawn cannot take; a start, stop or reload that failed, or an unrecognized failure, may go
    another way next time."""
    assert {
        Kind.BUILD_FAILED,
        Kind.NOT_FOUND,
        Kind.INVALID_NAME,
        Kind.NAME_TOO_LONG,
        Kind.UNAVAILABLE,
        Kind.BAD_PATH,
    } == PERMANENT
    for kind in Kind:
        assert BackendError(kind, "x").permanent is (kind in PERMANENT)
    retried = {Kind.START_FAILED, Kind.STOP_FAILED, Kind.UPDATE_FAILED, Kind.FAILED}
    assert not retried & PERMANENT


def test_last_lines_keep_the_end_and_say_what_was_left_out() -> None:
    text = "\n".join(f"line {i}" for i in range(1, 101)) + "\n\n   \n"
    kept = last_lines(text)
    assert kept[0] == f"… ({100 - LAST_LINES} lines left out here are in hive-c0re's log)"
    assert kept[1:] == [f"line {i}" for i in range(101 - LAST_LINES, 101)]
    assert last_lines("one\n\ntwo\n") == ["one", "two"]  # blank lines cost nothing
    assert last_lines("  \n") == []


def test_nix_s_first_error_line_stays_when_its_block_is_longer_than_the_tail() -> None:
    # It names what failed: the derivation (or the file) whose last lines follow.
    kept = last_lines(BUILD_FAILED)
    assert kept[0] == "error: builder for '/nix/store/aaaa-etc.drv' failed with exit code 1;"
    assert kept[1] == "… (11 lines left out here are in hive-c0re's log)"
    assert kept[2:] == [line.rstrip() for line in BUILD_FAILED.splitlines()[-LAST_LINES:]]


def test_last_lines_are_bounded_in_characters() -> None:
    wide = [f"{i:02d} " + "x" * 197 for i in range(LAST_LINES)]  # 200 characters each
    kept = last_lines("\n".join(wide))
    assert sum(len(line) + 1 for line in kept[1:]) <= LAST_LINES_CHARS
    assert kept[-1] == wide[-1] and kept[1] == wide[LAST_LINES - len(kept) + 1]
    one = "start " + "y" * 5000 + " the end"
    [line] = last_lines(one)
    assert len(line) == LAST_LINES_CHARS and line.startswith("…") and line.endswith(" the end")


def test_a_failed_build_says_what_failed_its_last_lines_and_what_to_do() -> None:
    error = failure(CliResult(CREATE, 1, "", BUILD_FAILED), Kind.BUILD_FAILED)
    text = str(error)

    first, *body = text.splitlines()
    assert first == (
        "building container h-bob from its flake failed (`nixos-container create h-bob "
        f"--flake '{FLAKE}#container'` exited with 1); the end of its output:"
    )
    # nix's first error line, then its error block and the CLI's die as printed.
    assert body[0] == "  error: builder for '/nix/store/aaaa-etc.drv' failed with exit code 1;"
    assert "         > error: collision between `/nix/store/x-a/bin/tool'" in text
    assert body[-2] == f"  {CLI}: failed to build container from flake '{FLAKE}'"
    assert "building '/nix/store/aaaa-etc.drv'" not in text  # progress is not the point
    # What to do, last.
    assert body[-1].startswith("  → nothing of the container was left behind; fix what nix's")
    assert "agent.nix" in body[-1] and "spawn the agent again" in body[-1]
    # It fits an approval note (2000 characters) with room to spare.
    assert len(text) < 2000


def test_a_one_line_failure_stays_on_one_line() -> None:
    stderr = f"{CLI}: container ‘h-bob’ does not exist\n"
    error = failure(CliResult(["nixos-container", "start", "h-bob"], 2, "", stderr), Kind.NOT_FOUND)
    assert error.what == (
        "container h-bob does not exist (`nixos-container start h-bob` exited with 2): "
        f"{CLI}: container ‘h-bob’ does not exist"
    )


def test_a_silent_failure_says_so() -> None:
    error = failure(CliResult(["nixos-container", "stop", "h-bob"], 1, "", ""), Kind.STOP_FAILED)
    assert error.what.endswith("exited with 1): no output")
    assert "journalctl -u container@h-bob" in error.hint
