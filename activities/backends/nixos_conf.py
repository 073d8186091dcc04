"""A nixos container's bind mounts, which live in its .conf as EXTRA_NSPAWN_FLAGS.

nixos-container has no flag for bind mounts: they go into the container's .conf (the env file
of `container@NAME.service`), whose EXTRA_NSPAWN_FLAGS reach systemd-nspawn unquoted (bash
word-splits them; ':' separates source from target), so paths with spaces, ':' or
shell-special characters are refused. `create` writes a fresh .conf and `update` keeps it: the
flags are (re)written after both. nspawn refuses to start when a bind source is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from activities.backends.base import BackendError, BackendErrorKind, Mount

# What survives EXTRA_NSPAWN_FLAGS unquoted: bash word splitting and globbing, and nspawn's
# SOURCE:TARGET syntax.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+,@=%/-]*")
_SAFE_PATH_CHARS = "letters, digits and . _ + , @ = % / -"
_FLAGS_LINE = "EXTRA_NSPAWN_FLAGS="


def nspawn_flags(container: str, mounts: Sequence[Mount]) -> str:
    """EXTRA_NSPAWN_FLAGS for `mounts`; BackendError (BAD_PATH: only moving the dirs helps) for a
    path nspawn would not get intact."""
    flags = []
    for mount in mounts:
        for what, path in (("host path", str(mount.host)), ("container path", mount.container)):
            if _SAFE_PATH.fullmatch(path):
                continue
            if not path.startswith("/"):
                problem = "is not absolute"
            else:
                bad = next(ch for ch in path if not _SAFE_PATH.fullmatch(f"/{ch}"))
                problem = {" ": "contains a space", ":": "contains ':'"}.get(
                    bad, f"contains {bad!r}"
                )
            raise BackendError(
                BackendErrorKind.BAD_PATH,
                f"cannot bind-mount {mount.host} at {mount.container} in {container}: the {what} "
                f"{path!r} {problem}, and nixos-container hands bind mounts to systemd-nspawn "
                "unquoted (EXTRA_NSPAWN_FLAGS is split on whitespace, ':' separates source and "
                f"target), so paths may contain only {_SAFE_PATH_CHARS}",
                "move the hive state and run dirs (HIVE_STATE_DIR, HIVE_RUN_DIR) to such a path",
            )
        option = "--bind" if mount.writable else "--bind-ro"
        flags.append(f"{option}={mount.host}:{mount.container}")
    return " ".join(flags)


def write_flags(conf: Path, container: str, flags: str) -> bool:
    """Put EXTRA_NSPAWN_FLAGS into the container's existing .conf (never create one: that is the
    CLI's record that the container exists). True if that changed the .conf."""
    try:
        text = conf.read_text()
        mode = conf.stat().st_mode & 0o7777
    except FileNotFoundError:
        raise BackendError(
            BackendErrorKind.FAILED,
            f"nixos-container made {container} but its config {conf} is not there",
            "point the backend's conf_dir at the host's nixos-container dir "
            "(/etc/nixos-containers; /etc/containers before system.stateVersion 22.05)",
        ) from None
    lines = [line for line in text.splitlines() if not line.startswith(_FLAGS_LINE)]
    if flags:
        lines.append(f'{_FLAGS_LINE}"{flags}"')
    new = "".join(f"{line}\n" for line in lines)
    if new == text:
        return False
    temp = conf.with_name(f".{conf.name}.hive-tmp")
    temp.write_text(new)
    os.chmod(temp, mode)
    os.replace(temp, conf)
    return True


def make_sources(mounts: Sequence[Mount]) -> None:
    for mount in mounts:
        mount.host.mkdir(mode=0o700, parents=True, exist_ok=True)


def make_sources_from_conf(conf: Path) -> None:
    """Make the bind sources the .conf names (e.g. the run dir after a reboot)."""
    try:
        text = conf.read_text()
    except FileNotFoundError:
        return  # the CLI says it does not exist
    for line in text.splitlines():
        if line.startswith(_FLAGS_LINE):
            value = line[len(_FLAGS_LINE) :].strip().strip('"')
            for source in _bind_sources(value):
                source.mkdir(mode=0o700, parents=True, exist_ok=True)


def _bind_sources(flags_value: str) -> list[Path]:
    sources = []
    for flag in flags_value.split():
        option, _, spec = flag.partition("=")
        if option in ("--bind", "--bind-ro") and spec.startswith("/"):
            sources.append(Path(spec.partition(":")[0]))
    return sources
