"""A small blocking client of the admin socket (`<run>/host.sock`), for the `hive` CLI and
scripts:

    with AdminClient(settings.host_socket_path) as admin:
        agents = admin.call("list")
        admin.call("approve", id=3, note="ok")

`call` returns the result, or raises `AdminRefused` (hive-c0re said no; `.code` is the
protocol's error code), `AdminUnavailable` (no hive-c0re answers: not running, or it stopped
answering) or `AdminUnusable` (the socket cannot be used from here: permissions, path, not an
admin socket), which the CLI tells apart by exit code (3 and 2).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from hyperhive.admin_protocol import PROTOCOL_VERSION, ErrorCode, parse_response
from hyperhive.errors import HiveError

# kill/stop/start wait for their workflow, which waits for a turn to end; the workflow itself
# gives up after 10 minutes.
DEFAULT_TIMEOUT_S = 11 * 60.0


class AdminUnavailable(HiveError):
    """No hive-c0re answers on the admin socket: it is not running (no socket, or nothing
    listening on it), or it stopped answering mid-request."""


class AdminUnusable(HiveError):
    """The admin socket is there but cannot be used from here (permissions, a path too long, not
    an admin socket): a setup problem, not a missing hive-c0re."""


class AdminRefused(HiveError):
    """hive-c0re answered `ok: false`."""

    def __init__(self, code: str, what: str, hint: str = "") -> None:
        super().__init__(what, hint)
        self.code = code

    @property
    def refused(self) -> bool:
        """True when the request was understood and declined (not a client or server bug)."""
        return self.code == ErrorCode.REFUSED.value


class AdminClient:
    def __init__(self, path: Path, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.path = path
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        if self._sock is not None and self._file is not None:
            return self._sock, self._file
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(os.fspath(self.path))
        except OSError as e:
            sock.close()
            raise self._unreachable(e) from None
        self._sock, self._file = sock, sock.makefile("rb")
        return self._sock, self._file

    def _unreachable(self, e: OSError) -> AdminUnavailable | AdminUnusable:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return AdminUnavailable(
                f"hive-c0re is not running (no {self.path})",
                "start it with `hive up` (or check HIVE_RUN_DIR / HIVE_STATE_DIR)",
            )
        if e.errno in (errno.EACCES, errno.EPERM):
            return AdminUnusable(
                f"permission denied on {self.path}",
                "the admin socket is for its owner and the admin group: add yourself to that "
                "group (then log in again), or run `hive` as the user that runs hive-c0re",
            )
        if e.errno == errno.ECONNREFUSED:
            return AdminUnavailable(
                f"hive-c0re is not running (nothing answers on {self.path}; it stopped or crashed)",
                "start it with `hive up`",
            )
        if e.errno is not None and e.errno in (errno.ENAMETOOLONG, errno.EINVAL):
            return AdminUnusable(
                f"cannot use {self.path}: {e.strerror}",
                "unix socket paths are limited to 107 bytes: use a shorter HIVE_RUN_DIR",
            )
        return AdminUnavailable(
            f"cannot reach hive-c0re at {self.path}: {e.strerror or e}",
            "check that hive-c0re is running (`hive up`)",
        )

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request; the whole response object, whether ok or not."""
        sock, reader = self._connect()
        line = json.dumps({"version": PROTOCOL_VERSION, "cmd": cmd, **args}).encode() + b"\n"
        try:
            sock.sendall(line)
            answer = reader.readline()
        except TimeoutError:
            self.close()
            raise AdminUnavailable(
                f"hive-c0re did not answer `{cmd}` within {self._timeout:.0f} s",
                "it may still be working on it: see `hive status` and hive-c0re's log",
            ) from None
        except OSError as e:
            self.close()
            raise AdminUnavailable(
                f"the connection to hive-c0re broke during `{cmd}`: {e.strerror or e}",
                "check that hive-c0re is still running (`hive status`)",
            ) from None
        if not answer:
            self.close()
            raise AdminUnavailable(
                f"hive-c0re closed the connection without answering `{cmd}`",
                "it may have stopped: see its log, then `hive up`",
            )
        response = parse_response(answer)
        if response is None:
            self.close()
            raise AdminUnusable(
                f"{self.path} answered something that is not an admin response: {answer[:80]!r}",
                "check that HIVE_RUN_DIR points at hive-c0re's run directory",
            )
        return response.model_dump()

    def call(self, cmd: str, **args: Any) -> Any:
        """Run `cmd`; its result, or AdminRefused with hive-c0re's message and hint."""
        response = self.request(cmd, **args)
        if not response["ok"]:
            raise AdminRefused(
                str(response.get("error") or "unknown"),
                str(response.get("message") or "hive-c0re refused the request"),
                str(response.get("hint") or ""),
            )
        return response["result"]
