"""The optional access token of the dashboard and agent pages (HIVE_ACCESS_TOKEN_REQUIRED).

hive-c0re keeps it in <state_dir>/secrets/access-token (0600, made the first time, kept across
restarts so that a browser's cookie stays good) and publishes a copy for the admins at
<run_dir>/access-token: 0640 with group HIVE_ADMIN_GROUP (0600 without one), so that the
people who may run `hive` may also script the HTTP API. The token is never logged.
"""

from __future__ import annotations

import grp
import os
import secrets
from pathlib import Path

from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings

# base64url text: safe in a URL query, a cookie and an Authorization header as it is.
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MIN_TOKEN_LENGTH = 32


def _read_token(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StartupError(
            f"cannot read the access token at {path}: {e.strerror}",
            "it must be a regular file hive-c0re owns; remove it to have a new token made",
        ) from None
    with os.fdopen(fd) as f:
        token = f.read().strip()
    if len(token) < MIN_TOKEN_LENGTH or not set(token) <= TOKEN_CHARS:
        raise StartupError(
            f"the access token at {path} is not usable (at least {MIN_TOKEN_LENGTH} characters "
            "of A-Z a-z 0-9 - _)",
            "remove the file to have a new token made at the next start",
        )
    return token


def _write_private(path: Path, text: str, mode: int, gid: int = -1) -> None:
    """Written whole under a temporary name, then renamed: a reader never sees half a token."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        if gid != -1:
            os.chown(partial, -1, gid)
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _admin_gid(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StartupError(
            f"the admin group {group!r} (HIVE_ADMIN_GROUP) does not exist",
            f"create it (`groupadd {group}`) or leave HIVE_ADMIN_GROUP empty",
        ) from None


def load_access_token(settings: HiveSettings) -> str | None:
    """The token in force (made the first time), published for the admins; None when the pages
    ask for none."""
    if not settings.access_token_required:
        return None
    token = _read_token(settings.access_token_path)
    if token is None:
        token = secrets.token_urlsafe(32)
        _write_private(settings.access_token_path, token, 0o600)
    if settings.admin_group:
        gid = _admin_gid(settings.admin_group)
        _write_private(settings.published_access_token_path, token, 0o640, gid)
    else:
        _write_private(settings.published_access_token_path, token, 0o600)
    return token
