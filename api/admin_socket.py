"""The admin socket `<run>/host.sock`: the JSON-line protocol of hyperhive/admin_protocol.py,
served to operators (file mode 0660: the owner and the admin group) and run through
`OperatorService`, so `hive approve 3` does exactly what the dashboard's button does.

Each connection reads one request per line and answers each in order. Nothing a client sends
ends its connection: a malformed or over-long line gets an error answer and the next line is
read as usual. Connections are served concurrently, so a `kill` waiting for its workflow holds up
only the connection that asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import re
import socket
import struct
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, assert_never

from pydantic import BaseModel

from api.unix_socket import bind_unix_socket, remove_socket
from control.operator import ControlAction, OperatorService
from hyperhive.admin_protocol import (
    MAX_LINE_BYTES,
    ApprovalsRequest,
    ApproveRequest,
    DenyRequest,
    DestroyRequest,
    ErrorCode,
    KillRequest,
    ListRequest,
    LoginRequest,
    LogsRequest,
    ProtocolError,
    Request,
    RestartRequest,
    SendRequest,
    SpawnRequest,
    StartRequest,
    StatusRequest,
    StopRequest,
    UrlsRequest,
    encode_response,
    error_response,
    line_too_long,
    ok_response,
    parse_request,
)
from hyperhive.credentials import CredentialKind
from hyperhive.domain import OPERATOR_NAME
from hyperhive.errors import HiveError
from hyperhive.settings import HiveSettings
from hyperhive.store.db import explain_store_failure

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
WHAT = "the admin socket"
# How long a `spawn` waits for its workflow to store the approval (its first activity, well under
# a second when the workers are idle), so that `hive spawn` can say which number to approve.
APPROVAL_WAIT_S = 5.0
# The store is asked again after 20 ms, then ever less often, up to every 250 ms.
APPROVAL_POLL_FIRST_S = 0.02
APPROVAL_POLL_MAX_S = 0.25


class AdminSocketError(HiveError):
    """The admin socket cannot be served."""


# Anything shaped like an Anthropic token or key, wherever it turns up.
_TOKEN_LIKE = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` without the request's secrets (as given, stripped, JSON- or repr-escaped) and
    without anything that looks like an Anthropic token: for messages and log lines about a
    request that carried a secret (`hive login`)."""
    if not secrets:
        return text
    for secret in secrets:
        for form in {secret, secret.strip(), json.dumps(secret)[1:-1], repr(secret)[1:-1]}:
            if len(form) >= 4:
                text = text.replace(form, "[secret]")
    return _TOKEN_LIKE.sub("sk-ant-[secret]", text)


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def peer_user(sock: socket.socket | None) -> str:
    """Who is on the other end (SO_PEERCRED): recorded as the decider of an approval, or the
    one who stopped an agent, when the request does not say."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return OPERATOR_NAME
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
    except OSError:
        return OPERATOR_NAME
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class _Lines:
    """Request lines from a stream, never more than `limit` bytes buffered. An over-long line
    is reported once (as a ProtocolError) and its rest skipped up to the next newline."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._buffer = bytearray()
        self._discarding = False

    async def __aiter__(self) -> AsyncIterator[bytes | ProtocolError]:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                yield line
                continue
            if len(self._buffer) > self._limit:
                self._buffer.clear()
                if not self._discarding:
                    self._discarding = True
                    # Answered now rather than at its newline, which may never come.
                    yield line_too_long(self._limit)
                continue
            chunk = await self._reader.read(READ_CHUNK)
            if not chunk:
                # A last line without its newline (`printf '…' | socat`) still gets an answer.
                if self._buffer.strip() and not self._discarding:
                    yield bytes(self._buffer)
                return
            if self._discarding:  # skipping the tail of an over-long line
                newline = chunk.find(b"\n")
                if newline < 0:
                    continue
                chunk = chunk[newline + 1 :]
                self._discarding = False
            self._buffer += chunk


class AdminSocket:
    def __init__(
        self,
        operator: OperatorService,
        settings: HiveSettings,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        approval_wait_s: float = APPROVAL_WAIT_S,
    ) -> None:
        self._operator = operator
        self._settings = settings
        self._max_line_bytes = max_line_bytes
        self._approval_wait_s = approval_wait_s
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> Path:
        return self._settings.host_socket_path

    async def start(self) -> None:
        path = self._settings.host_socket_path
        sock = bind_unix_socket(path, WHAT, AdminSocketError)
        try:
            self._inode = os.stat(path).st_ino
            self._give_to_admin_group(path)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            if self._inode is not None:
                remove_socket(path, self._inode)
            raise
        log.info("admin socket listening on %s", path)

    def _give_to_admin_group(self, path: Path) -> None:
        group = self._settings.admin_group
        if not group:
            return
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except KeyError:
            raise AdminSocketError(
                f"the admin group {group!r} (HIVE_ADMIN_GROUP) does not exist",
                f"create it (`groupadd {group}`) or leave HIVE_ADMIN_GROUP empty",
            ) from None
        except PermissionError as e:
            raise AdminSocketError(
                f"cannot give {path} to group {group!r}: {e.strerror}",
                "run hive-c0re as root or as a member of that group",
            ) from None

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Open connections (maybe waiting on a slow command) end with hive-c0re.
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await server.wait_closed()
        if self._inode is not None:
            remove_socket(self._settings.host_socket_path, self._inode)
        log.info("admin socket stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        user = peer_user(writer.get_extra_info("socket"))
        try:
            async for line in _Lines(reader, self._max_line_bytes):
                writer.write(await self.answer(line, user))
                await writer.drain()
        except (ConnectionError, BrokenPipeError):
            log.debug("admin client %s went away", user)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()

    async def answer(self, line: bytes | ProtocolError, user: str) -> bytes:
        """The response line to one request line (never raises, except to be cancelled)."""
        response = await self._handle(line, user)
        try:
            return encode_response(response)
        except (TypeError, ValueError) as e:
            log.exception("admin response to %s could not be encoded", user)
            return encode_response(
                error_response(
                    ErrorCode.INTERNAL,
                    f"hive-c0re could not encode its answer: {e}",
                    "see hive-c0re's log; the command itself may have run",
                    response.get("request_id"),
                )
            )

    async def _handle(self, line: bytes | ProtocolError, user: str) -> dict[str, Any]:
        request = (
            line
            if isinstance(line, ProtocolError)
            else parse_request(line, max_bytes=self._max_line_bytes)
        )
        if isinstance(request, ProtocolError):
            log.debug("admin request from %s refused: %s", user, request.message)
            return request.response()
        if request.acts:
            log.info(
                "admin: %s asks %s",
                user,
                request.model_dump_json(
                    exclude={"version", "body", "purpose", *request.secret_fields}
                ),
            )
        try:
            result = await self._dispatch(request, user)
            return ok_response(_json(result), request.request_id)
        except HiveError as e:
            secrets = request.secrets()
            return error_response(
                ErrorCode.REFUSED,
                redact(e.what, secrets),
                redact(e.hint, secrets),
                request.request_id,
            )
        except Exception as e:
            secrets = request.secrets()
            failure = explain_store_failure(e)
            if failure is not None:
                what = redact(failure.what, secrets)
                log.warning("admin command %r from %s: %s", request.cmd, user, what)
                return error_response(
                    ErrorCode.REFUSED, what, redact(failure.hint, secrets), request.request_id
                )
            if secrets:
                # Not log.exception: the formatted traceback is redacted first.
                log.error(
                    "admin command %r from %s failed:\n%s",
                    request.cmd,
                    user,
                    redact("".join(traceback.format_exception(e)).rstrip(), secrets),
                )
            else:
                log.exception("admin command %r from %s failed", request.cmd, user)
            return error_response(
                ErrorCode.INTERNAL,
                redact(
                    f"`{request.cmd}` failed inside hive-c0re: {type(e).__name__}: {e}", secrets
                ),
                "see hive-c0re's log; nothing is known to have changed",
                request.request_id,
            )

    async def _dispatch(self, request: Request, user: str) -> Any:
        operator = self._operator
        match request:
            case ListRequest():
                return await operator.agents()
            case StatusRequest():
                return await operator.status()
            case ApprovalsRequest(pending_only=pending_only):
                return await operator.approvals(pending_only=pending_only)
            case ApproveRequest() | DenyRequest():
                approved = isinstance(request, ApproveRequest)
                approval = await operator.decide(
                    request.id, approved=approved, by=request.by or user, note=request.note
                )
                # The approval as it was when the decision was signalled; its workflow records
                # the decision (and its outcome) right after.
                return {"decision": "approved" if approved else "denied", "approval": approval}
            case SendRequest(to=to, body=body):
                return await operator.send(to, body)
            case SpawnRequest(name=name, purpose=purpose, fresh=fresh):
                workflow_id = await operator.spawn(name, purpose, fresh=fresh)
                return {
                    "name": name,
                    "workflow_id": workflow_id,
                    "approval_id": await self._stored_approval(workflow_id),
                }
            case DestroyRequest(confirm=False, name=name):
                raise HiveError(
                    f"destroy removes the container of {name} (its repos and history stay)",
                    f'send "confirm": true to mean it (from a shell: `hive destroy {name} --yes`)',
                )
            case (
                KillRequest()
                | StopRequest()
                | StartRequest()
                | RestartRequest()
                | (DestroyRequest())
            ):
                action = ControlAction(request.cmd)
                return await operator.control(action, request.name, by=request.by or user)
            case LogsRequest(name=name, after_id=after_id, limit=limit):
                return await operator.logs(name, after_id=after_id, limit=limit)
            case UrlsRequest():
                return await operator.urls()
            case LoginRequest(name=name, kind=kind, secret=secret):
                # The answer is the kind and a masked hint, never the secret.
                return await operator.login(name, CredentialKind(kind), secret.get_secret_value())
        assert_never(request)

    async def _stored_approval(self, workflow_id: str) -> int | None:
        """The id of the approval `workflow_id` stores as its first step, once it is there; None
        if it is not within `approval_wait_s` (the spawn stands either way).

        Polled: nothing publishes "approval stored". Its pending approval is the one: a workflow
        id has one running workflow at a time, whose approval stays pending until someone
        decides it (and nobody knows its number yet); a pending row left by an earlier run of
        the same id is what that workflow's create_approval hands back, so it is the right
        number too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._approval_wait_s
        pause = APPROVAL_POLL_FIRST_S
        while True:
            found = await self._operator.pending_approval_id(workflow_id)
            if found is not None:
                return found
            left = deadline - loop.time()
            if left <= 0:
                log.info(
                    "the approval of %s was not stored within %.1f s",
                    workflow_id,
                    self._approval_wait_s,
                )
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, APPROVAL_POLL_MAX_S)
