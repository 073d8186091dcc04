"""The admin protocol of `<run>/host.sock`: one JSON object per line in, one per line out.

Pure (no I/O): the socket server (api/admin_socket.py) and the client (hyperhive/admin_client.py)
share these models, so what the server accepts is exactly what the client can send.

    → {"version": 1, "cmd": "approve", "id": 3, "note": "", "by": "alice", "request_id": 7}
    ← {"version": 1, "ok": true, "result": {...}, "request_id": 7}
    ← {"version": 1, "ok": false, "error": "refused", "message": "...", "hint": "...", ...}

Every request names the protocol `version` it speaks; a server refuses versions it does not know
rather than guessing. `request_id` (optional, any string or integer) is echoed back so a client
that pipelines requests can match the answers; it is not called `id` because `approve` and `deny`
already use `id` for the approval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from hyperhive.strict_json import StrictJsonError, json_kind, loads_strict

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)
# Requests are a few hundred bytes; a message body is capped far lower by the broker. The cap
# only keeps a runaway client from making hive-c0re buffer without end.
MAX_LINE_BYTES = 1 << 20
# Requests are flat objects; anything nested this deep is garbage, and refusing it early keeps
# the JSON parser away from its recursion limit.
MAX_DEPTH = 32
# Database ids are signed 64-bit integers.
MAX_ID = 2**63 - 1
MAX_LIST = 1000
MAX_REQUEST_ID_CHARS = 128
# A pasted token is ~100 characters and a .credentials.json well under 1 KiB; hive-c0re refuses
# over 16 KiB anyway (hyperhive/credentials.py), this only bounds what the protocol takes.
MAX_SECRET_CHARS = 65536


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    UNSUPPORTED_VERSION = "unsupported_version"
    LINE_TOO_LONG = "line_too_long"
    # The request was well formed but hive-c0re said no (a HiveError): nothing changed.
    REFUSED = "refused"
    INTERNAL = "internal"


RequestId = int | str | None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A request that could not be run, with what happened and what to do about it."""

    code: ErrorCode
    message: str
    hint: str = ""
    request_id: RequestId = None

    def response(self) -> dict[str, Any]:
        return error_response(self.code, self.message, self.hint, self.request_id)


# -- requests ---------------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=64)]
# Recorded as who decided and shown everywhere: one line, no control characters.
By = Annotated[str, Field(max_length=64, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
ApprovalId = Annotated[int, Field(ge=1, le=MAX_ID)]


class BaseRequest(BaseModel):
    # strict: `true` is not 1 and "3" is not 3; a typo in a field name is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    version: int = PROTOCOL_VERSION
    request_id: (
        Annotated[int, Field(ge=-MAX_ID, le=MAX_ID)]
        | Annotated[str, Field(max_length=MAX_REQUEST_ID_CHARS)]
        | None
    ) = None
    cmd: str

    #: A valid request, shown in the hint when one is malformed.
    example: ClassVar[dict[str, Any]]
    #: Whether the command changes anything (logged with who asked).
    acts: ClassVar[bool] = False
    #: Fields that hold a secret: never logged, never echoed back in an error.
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def secrets(self) -> tuple[str, ...]:
        """The secret values this request carries (for redacting errors about it)."""
        return ()


class ListRequest(BaseRequest):
    """The agents table."""

    cmd: Literal["list"] = "list"
    example: ClassVar[dict[str, Any]] = {}


class StatusRequest(BaseRequest):
    cmd: Literal["status"] = "status"
    example: ClassVar[dict[str, Any]] = {}


class ApprovalsRequest(BaseRequest):
    cmd: Literal["approvals"] = "approvals"
    pending_only: bool = False
    example: ClassVar[dict[str, Any]] = {"pending_only": True}


class _DecideRequest(BaseRequest):
    id: ApprovalId
    note: Annotated[str, Field(max_length=2000)] = ""
    # Empty: the peer's user name (from the socket's credentials).
    by: By = ""
    example: ClassVar[dict[str, Any]] = {"id": 3, "note": "", "by": "alice"}
    acts: ClassVar[bool] = True


class ApproveRequest(_DecideRequest):
    cmd: Literal["approve"] = "approve"


class DenyRequest(_DecideRequest):
    cmd: Literal["deny"] = "deny"


class SendRequest(BaseRequest):
    cmd: Literal["send"] = "send"
    to: Name
    body: str
    example: ClassVar[dict[str, Any]] = {"to": "alice", "body": "hi"}
    acts: ClassVar[bool] = True


class SpawnRequest(BaseRequest):
    cmd: Literal["spawn"] = "spawn"
    name: Name
    purpose: Annotated[str, Field(max_length=4000)]
    # Re-spawning an agent whose container is gone: discard its config, inbox and session.
    fresh: bool = False
    example: ClassVar[dict[str, Any]] = {"name": "bob", "purpose": "answers questions"}
    acts: ClassVar[bool] = True


class _ControlRequest(BaseRequest):
    name: Name
    by: By = ""
    example: ClassVar[dict[str, Any]] = {"name": "alice"}
    acts: ClassVar[bool] = True


class KillRequest(_ControlRequest):
    cmd: Literal["kill"] = "kill"


class StopRequest(_ControlRequest):
    cmd: Literal["stop"] = "stop"


class StartRequest(_ControlRequest):
    cmd: Literal["start"] = "start"


class RestartRequest(_ControlRequest):
    cmd: Literal["restart"] = "restart"


class DestroyRequest(_ControlRequest):
    cmd: Literal["destroy"] = "destroy"
    # Destroy removes a container: a script must say it means it.
    confirm: bool = False
    example: ClassVar[dict[str, Any]] = {"name": "alice", "confirm": True}


class LogsRequest(BaseRequest):
    cmd: Literal["logs"] = "logs"
    name: Name
    after_id: Annotated[int, Field(ge=0, le=MAX_ID)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_LIST)] = 200
    example: ClassVar[dict[str, Any]] = {"name": "alice", "after_id": 0, "limit": 100}


class UrlsRequest(BaseRequest):
    cmd: Literal["urls"] = "urls"
    example: ClassVar[dict[str, Any]] = {}


#: hyperhive.credentials.CredentialKind's values (kept apart: this module stays pure).
LoginKind = Literal["oauth_token", "api_key", "credentials_json"]


class LoginRequest(BaseRequest):
    """Store an agent's own credentials (what its page's login form does). The answer is
    the kind and a masked hint; `secret` is never logged or echoed back."""

    cmd: Literal["login"] = "login"
    name: Name
    kind: LoginKind
    secret: Annotated[SecretStr, Field(min_length=1, max_length=MAX_SECRET_CHARS)]
    example: ClassVar[dict[str, Any]] = {
        "name": "bob",
        "kind": "oauth_token",
        "secret": "sk-ant-oat01-…",
    }
    acts: ClassVar[bool] = True
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret"})

    def secrets(self) -> tuple[str, ...]:
        return (self.secret.get_secret_value(),)


Request = (
    ListRequest
    | StatusRequest
    | ApprovalsRequest
    | ApproveRequest
    | DenyRequest
    | SendRequest
    | SpawnRequest
    | KillRequest
    | StopRequest
    | StartRequest
    | RestartRequest
    | DestroyRequest
    | LogsRequest
    | UrlsRequest
    | LoginRequest
)

COMMANDS: dict[str, type[BaseRequest]] = {
    model.model_fields["cmd"].default: model
    for model in (
        ListRequest,
        StatusRequest,
        ApprovalsRequest,
        ApproveRequest,
        DenyRequest,
        SendRequest,
        SpawnRequest,
        KillRequest,
        StopRequest,
        StartRequest,
        RestartRequest,
        DestroyRequest,
        LogsRequest,
        UrlsRequest,
        LoginRequest,
    )
}
_ENVELOPE = ("version", "cmd", "request_id")


def example_line(cmd: str) -> str:
    model = COMMANDS[cmd]
    return json.dumps({"version": PROTOCOL_VERSION, "cmd": cmd, **model.example})


def usage(cmd: str) -> str:
    """What `cmd` takes, e.g. "send takes to (string), body (string); e.g. {...}"."""
    model = COMMANDS[cmd]
    fields = []
    for name, info in model.model_fields.items():
        if name in _ENVELOPE:
            continue
        type_name = _TYPE_NAMES.get(info.annotation, "value")
        fields.append(f"{name} ({type_name}{'' if info.is_required() else ', optional'})")
    takes = ", ".join(fields) if fields else "no fields"
    return f"`{cmd}` takes {takes}; e.g. {example_line(cmd)}"


_TYPE_NAMES: dict[Any, str] = {
    int: "integer",
    str: "string",
    bool: "boolean",
    SecretStr: "string",
    LoginKind: '"oauth_token", "api_key" or "credentials_json"',
}


# -- parsing ----------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = json.dumps(value) if json_kind(value) != "an object" else "{…}"
    return text if len(text) <= 40 else text[:37] + "…"


def line_too_long(limit: int = MAX_LINE_BYTES) -> ProtocolError:
    return ProtocolError(
        ErrorCode.LINE_TOO_LONG,
        f"the request line is longer than {limit} bytes; it was discarded",
        "send one JSON object per line; for long message bodies see HIVE_MAX_BODY_BYTES",
    )


def parse_request(line: bytes, *, max_bytes: int = MAX_LINE_BYTES) -> Request | ProtocolError:
    """One request line (with or without its newline) → a request, or why it is not one."""
    if len(line) > max_bytes + 2:  # + the line ending
        return line_too_long(max_bytes)
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if not line.strip():
        return ProtocolError(
            ErrorCode.BAD_JSON,
            "the line is empty",
            f"send one JSON object per line, e.g. {example_line('status')}",
        )
    try:
        obj = loads_strict(line, max_depth=MAX_DEPTH)
    except StrictJsonError as e:
        return ProtocolError(
            ErrorCode.BAD_JSON,
            f"the line is {e}" if str(e).startswith("not ") else str(e),
            f"send one JSON object per line (UTF-8, RFC 8259), e.g. {example_line('status')}",
        )
    if not isinstance(obj, dict):
        return ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"the request is {json_kind(obj)}, not a JSON object",
            f"send an object, e.g. {example_line('status')}",
        )
    return _parse_object(obj)


def _request_id(obj: dict[str, Any]) -> RequestId:
    """The request id to echo, if it is one we would accept (a bad one is reported later)."""
    value = obj.get("request_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) <= MAX_ID:
        return value
    if isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS:
        return value
    return None


def _bad_string(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
    return None


def _parse_object(obj: dict[str, Any]) -> Request | ProtocolError:
    rid = _request_id(obj)
    supported = ", ".join(map(str, SUPPORTED_VERSIONS))

    if "version" not in obj:
        return ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            "the request has no `version`",
            f'add "version": {PROTOCOL_VERSION} (this hive-c0re speaks version {supported})',
            rid,
        )
    version = obj["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        return ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"`version` must be an integer, not {json_kind(version)} ({_shown(version)})",
            f'use "version": {PROTOCOL_VERSION} (this hive-c0re speaks version {supported})',
            rid,
        )
    if version not in SUPPORTED_VERSIONS:
        return ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {_shown(version)} is not supported; "
            f"this hive-c0re speaks version {supported}",
            "use a `hive` CLI from the same hyperhive release as the running hive-c0re",
            rid,
        )

    known = ", ".join(COMMANDS)
    if "cmd" not in obj:
        return ProtocolError(
            ErrorCode.UNKNOWN_COMMAND, "the request has no `cmd`", f"`cmd` is one of: {known}", rid
        )
    cmd = obj["cmd"]
    if not isinstance(cmd, str):
        return ProtocolError(
            ErrorCode.UNKNOWN_COMMAND,
            f"`cmd` must be a string, not {json_kind(cmd)} ({_shown(cmd)})",
            f"`cmd` is one of: {known}",
            rid,
        )
    model = COMMANDS.get(cmd)
    if model is None:
        return ProtocolError(
            ErrorCode.UNKNOWN_COMMAND,
            f"there is no command {_shown(cmd)}",
            f"`cmd` is one of: {known}",
            rid,
        )

    for key, value in obj.items():
        if isinstance(value, str) and (problem := _bad_string(value)) is not None:
            return ProtocolError(
                ErrorCode.BAD_REQUEST, f"`{key}` {problem}", "send text without it", rid
            )
    try:
        request = model.model_validate(obj)
    except ValidationError as e:
        return ProtocolError(
            ErrorCode.BAD_REQUEST,
            # In a request that carries a secret no value is shown: not even one sent in the
            # wrong field.
            _describe(
                e.errors(include_url=False),
                hide=frozenset(obj) if model.secret_fields else frozenset(),
            ),
            usage(cmd),
            rid,
        )
    return request  # type: ignore[return-value]  # COMMANDS holds exactly the Request types


def _describe(errors: list[ErrorDetails], hide: frozenset[str] = frozenset()) -> str:
    # A union field fails once per member: say it once.
    problems = list(dict.fromkeys(_describe_one(err, hide) for err in errors))
    shown = "; ".join(problems[:3])
    if len(problems) > 3:
        shown += f"; and {len(problems) - 3} more"
    return shown


def _describe_one(err: ErrorDetails, hide: frozenset[str] = frozenset()) -> str:
    field = str(err["loc"][0]) if err["loc"] else "the request"
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    # A secret's value is never shown, however wrong it is (pydantic's own `msg` and `str(e)`
    # do not show inputs for these kinds, but `_shown(value)` would).
    shown = "hidden" if field in hide else _shown(value)
    if field == "request_id" and kind in ("int_type", "string_type"):
        return f"`request_id` must be a string or an integer, not {json_kind(value)}"
    if kind == "extra_forbidden":
        return f"unknown field `{field}`"
    if kind == "missing":
        return f"missing field `{field}`"
    if kind == "int_type":
        return f"`{field}` must be an integer, not {json_kind(value)} ({shown})"
    if kind == "string_type":
        return f"`{field}` must be a string, not {json_kind(value)} ({shown})"
    if kind == "bool_type":
        return f"`{field}` must be true or false, not {json_kind(value)} ({shown})"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"`{field}` must be at least {bound} (got {shown})"
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        return f"`{field}` must be at most {bound} (got {shown})"
    if kind in ("string_too_short", "too_short"):
        return f"`{field}` must not be empty"
    if kind in ("string_too_long", "too_long"):
        return f"`{field}` is longer than {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"`{field}` must be printable text on one line (no control characters)"
    if kind == "literal_error":
        return f"`{field}` must be {ctx.get('expected')}" + (
            "" if field in hide else f", not {shown}"
        )
    if field in hide:
        return f"`{field}` is not valid"
    return f"`{field}`: {err['msg']}"


# -- responses --------------------------------------------------------------------------------


def ok_response(result: Any, request_id: RequestId = None) -> dict[str, Any]:
    response: dict[str, Any] = {"version": PROTOCOL_VERSION, "ok": True, "result": result}
    if request_id is not None:
        response["request_id"] = request_id
    return response


def error_response(
    code: ErrorCode, message: str, hint: str = "", request_id: RequestId = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "version": PROTOCOL_VERSION,
        "ok": False,
        "error": code.value,
        "message": message,
        "hint": hint,
    }
    if request_id is not None:
        response["request_id"] = request_id
    return response


def encode_response(response: dict[str, Any]) -> bytes:
    """One response line. `result` must already be JSON-safe (pydantic `mode="json"` dumps)."""
    return json.dumps(response, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


class Response(BaseModel):
    """A response line as a client reads it."""

    model_config = ConfigDict(extra="allow")

    version: int
    ok: bool
    result: Any = None
    error: str = ""
    message: str = ""
    hint: str = ""
    request_id: int | str | None = None


def parse_response(line: bytes) -> Response | None:
    """A response line, or None when it is not one (the client reports what it got)."""
    try:
        return Response.model_validate_json(line)
    except ValidationError:
        return None
