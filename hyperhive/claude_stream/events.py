"""Each line of ``claude -p --output-format stream-json --verbose`` stdout, parsed once.

One JSON object per line. ``parse_line`` never raises: a line that is not a JSON object becomes a
``NoiseEvent``, an object of a type not modelled here an ``OtherEvent``, and a field of the wrong
type reads as absent. Every event keeps the whole object as ``raw`` (what the store records).

What claude 2.1.197 prints (recorded in tests/unit/claude_stream/transcripts, see REFERENCE §1):

- ``system/init`` first (model, ``tools``, ``mcp_servers`` with ``status`` connected/failed), except
  for ``--resume <unknown id>``, which prints only a ``result``.
- ``assistant`` events, one per content block (text, tool_use; thinking with the real API). A
  *synthetic* assistant message (``model: "<synthetic>"``) carries an ``error`` field when the turn
  failed: ``authentication_failed`` (401, 403 and "Not logged in"), ``rate_limit`` (429),
  ``server_error`` (5xx, 529 and "Request timed out"), ``invalid_request`` (400).
- ``user`` events with ``tool_result`` blocks; ``content`` is a string or a list of blocks.
- ``system/api_retry`` per retry of the CLI's own (``retry_delay_ms`` is the ``retry-after`` header
  when the API sent one, else its jittered backoff). With ``CLAUDE_CODE_MAX_RETRIES=0`` there are
  none, so then no retry hint is in the stream at all.
- ``rate_limit_event`` (``rate_limit_info.status`` ``rejected``, ``resetsAt`` epoch seconds,
  ``rateLimitType`` e.g. ``five_hour``) only with subscription (OAuth) auth and the API's
  ``anthropic-ratelimit-unified-*`` headers; the final text then reads "You've hit your session
  limit · resets 4:21pm (UTC)". With an API key a 429 gives only "API Error: Request rejected
  (429) · <message>", no reset time.
- ``result`` last: ``is_error``, ``api_error_status`` (absent, not null, on
  ``error_during_execution`` and ``error_max_turns``, which carry ``errors: [...]`` and no
  ``result`` text), usage, cost.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, Field

NOISE = "noise"
MCP_FAILED_STATUSES = frozenset({"failed", "needs-auth"})


# -- content blocks of assistant and user messages --------------------------------------------


@dataclass(frozen=True, slots=True)
class TextBlock:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    thinking: str


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    name: str
    id: str | None
    input: dict[str, object]


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    tool_use_id: str | None
    is_error: bool
    # The result's ``content`` as text: it is a string or a list of blocks (images as "[image]").
    text: str


@dataclass(frozen=True, slots=True)
class OtherBlock:
    """A block of a kind nothing here reads (redacted thinking, server tool use, ...)."""

    type: str | None


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock | OtherBlock


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    session_id: str | None = None
    raw: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoiseEvent(_Event):
    """A line that is not a JSON object: the line is in ``text``, ``raw`` is empty."""

    type: ClassVar[str] = NOISE
    subtype: ClassVar[str | None] = None
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InitEvent(_Event):
    """``system/init``: the run's model, tools and MCP servers."""

    type: ClassVar[str] = "system"
    subtype: ClassVar[str | None] = "init"
    model: str | None = None
    # name → status: connected, failed, needs-auth, pending, disabled.
    mcp_servers: dict[str, str] = field(default_factory=dict)
    tool_count: int = 0
    permission_mode: str | None = None
    cwd: str | None = None
    claude_code_version: str | None = None

    @property
    def failed_servers(self) -> list[str]:
        """The MCP servers that failed to connect: the turn runs without their tools."""
        # "pending" (e.g. a run that ended before the servers were up, as "Not logged in" does)
        # and "disabled" are not failures.
        return [name for name, status in self.mcp_servers.items() if status in MCP_FAILED_STATUSES]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiRetryEvent(_Event):
    """``system/api_retry``: the CLI retries an API request of its own accord."""

    type: ClassVar[str] = "system"
    subtype: ClassVar[str | None] = "api_retry"
    attempt: int | None = None
    max_retries: int | None = None
    retry_delay_ms: float | None = None
    error_status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantEvent(_Event):
    type: ClassVar[str] = "assistant"
    subtype: ClassVar[str | None] = None
    content: tuple[ContentBlock, ...] = ()
    # A synthetic message's ``error`` (authentication_failed, rate_limit, ...); never "".
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent(_Event):
    type: ClassVar[str] = "user"
    subtype: ClassVar[str | None] = None
    content: tuple[ContentBlock, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitEvent(_Event):
    """``rate_limit_event``: subscription auth only."""

    type: ClassVar[str] = "rate_limit_event"
    subtype: ClassVar[str | None] = None
    status: str | None = None
    # Epoch seconds.
    resets_at: float | None = None
    rate_limit_type: str | None = None


class PermissionDenial(BaseModel):
    tool_name: str
    tool_use_id: str | None = None
    tool_input: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultEvent(_Event):
    """``result``, the run's last line."""

    type: ClassVar[str] = "result"
    subtype: str | None = None
    is_error: bool = False
    api_error_status: int | None = None
    result: str | None = None
    errors: tuple[str, ...] = ()
    terminal_reason: str | None = None
    # Per process: a warm claude's results carry a running total.
    total_cost_usd: float | None = None
    duration_ms: int | None = None
    num_turns: int = 0
    usage: Usage = field(default_factory=Usage)
    permission_denials: tuple[PermissionDenial, ...] = ()

    @property
    def text(self) -> str:
        """The result's text, or its ``errors`` joined when it has none (max turns, resume)."""
        return self.result or "; ".join(self.errors)


@dataclass(frozen=True, slots=True, kw_only=True)
class OtherEvent(_Event):
    """An object of a type (or system subtype) not modelled here; ``type`` is "unknown" when
    the object's is not a string."""

    type: str
    subtype: str | None = None


StreamEvent = (
    NoiseEvent
    | InitEvent
    | ApiRetryEvent
    | AssistantEvent
    | UserEvent
    | RateLimitEvent
    | ResultEvent
    | OtherEvent
)


def parse_line(line: str) -> StreamEvent:
    """Parse one stdout line; never raises."""
    stripped = line.strip()
    try:
        obj = json.loads(stripped) if stripped else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return NoiseEvent(text=line.rstrip("\r\n"))
    return parse_object(obj)


def parse_object(obj: dict[str, object], *, default_type: str = "unknown") -> StreamEvent:
    """The event of one decoded stdout object, as ``parse_line`` reads it; also of a stored
    event's payload, with the stored kind as ``default_type`` (a noise line's payload is empty)."""
    type_ = obj.get("type")
    kind = type_ if isinstance(type_, str) else default_type
    subtype = _str(obj.get("subtype"))
    session_id = _str(obj.get("session_id"))
    match kind, subtype:
        case "noise", _:
            return NoiseEvent(session_id=session_id, raw=obj)
        case "system", "init":
            return InitEvent(
                session_id=session_id,
                raw=obj,
                model=_str(obj.get("model")),
                mcp_servers=_mcp_servers(obj.get("mcp_servers")),
                tool_count=len(_list(obj.get("tools"))),
                permission_mode=_str(obj.get("permissionMode")),
                cwd=_str(obj.get("cwd")),
                claude_code_version=_str(obj.get("claude_code_version")),
            )
        case "system", "api_retry":
            return ApiRetryEvent(
                session_id=session_id,
                raw=obj,
                attempt=_int(obj.get("attempt")),
                max_retries=_int(obj.get("max_retries")),
                retry_delay_ms=_number(obj.get("retry_delay_ms")),
                error_status=_int(obj.get("error_status")),
                error=_str(obj.get("error")),
            )
        case "assistant", _:
            return AssistantEvent(
                session_id=session_id,
                raw=obj,
                content=_message_content(obj.get("message")),
                error=_str(obj.get("error")) or None,
            )
        case "user", _:
            return UserEvent(
                session_id=session_id, raw=obj, content=_message_content(obj.get("message"))
            )
        case "rate_limit_event", _:
            info = _dict(obj.get("rate_limit_info"))
            return RateLimitEvent(
                session_id=session_id,
                raw=obj,
                status=_str(info.get("status")),
                resets_at=_number(info.get("resetsAt")),
                rate_limit_type=_str(info.get("rateLimitType")),
            )
        case "result", _:
            return _result(obj, subtype, session_id)
    return OtherEvent(type=kind, subtype=subtype, session_id=session_id, raw=obj)


def _result(obj: dict[str, object], subtype: str | None, session_id: str | None) -> ResultEvent:
    usage = _dict(obj.get("usage"))
    return ResultEvent(
        session_id=session_id,
        raw=obj,
        subtype=subtype,
        is_error=obj.get("is_error") is True,
        api_error_status=_int(obj.get("api_error_status")),
        result=_str(obj.get("result")),
        errors=tuple(str(e) for e in _list(obj.get("errors")) if e is not None),
        terminal_reason=_str(obj.get("terminal_reason")),
        total_cost_usd=_number(obj.get("total_cost_usd")),
        duration_ms=_int(obj.get("duration_ms")),
        num_turns=_int(obj.get("num_turns")) or 0,
        usage=Usage(
            input_tokens=_int(usage.get("input_tokens")) or 0,
            output_tokens=_int(usage.get("output_tokens")) or 0,
            cache_creation_input_tokens=_int(usage.get("cache_creation_input_tokens")) or 0,
            cache_read_input_tokens=_int(usage.get("cache_read_input_tokens")) or 0,
        ),
        permission_denials=tuple(
            PermissionDenial(
                tool_name=str(item.get("tool_name", "?")),
                tool_use_id=_str(item.get("tool_use_id")),
                tool_input=_dict(item.get("tool_input")),
            )
            for item in _dicts(obj.get("permission_denials"))
        ),
    )


def _message_content(message: object) -> tuple[ContentBlock, ...]:
    content = _dict(message).get("content")
    if isinstance(content, str):
        return (TextBlock(content),)
    return tuple(_block(block) for block in _dicts(content))


def _block(block: dict[str, object]) -> ContentBlock:
    match block.get("type"):
        case "text":
            return TextBlock(str(block.get("text", "")))
        case "thinking":
            return ThinkingBlock(str(block.get("thinking", "")))
        case "tool_use":
            return ToolUseBlock(
                name=str(block.get("name", "?")),
                id=_str(block.get("id")),
                input=_dict(block.get("input")),
            )
        case "tool_result":
            return ToolResultBlock(
                tool_use_id=_str(block.get("tool_use_id")),
                is_error=block.get("is_error") is True,
                text=_tool_result_text(block.get("content")),
            )
        case other:
            return OtherBlock(_str(other))


def _tool_result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for item in _dicts(content):
        if item.get("type") == "text":
            parts.append(str(item.get("text", "")))
        elif item.get("type") == "image":
            parts.append("[image]")
        else:
            parts.append(f"[{item.get('type', '?')}]")
    return "\n".join(parts)


def _mcp_servers(value: object) -> dict[str, str]:
    servers: dict[str, str] = {}
    for server in _dicts(value):
        name = server.get("name")
        if isinstance(name, str):
            servers[name] = str(server.get("status") or "unknown")
    return servers


# -- reading one JSON value as a typed one (absent when it has another type) ------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    # json.loads reads Infinity, NaN and integers too large for a float: none is a count or time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _dicts(value: object) -> list[dict[str, object]]:
    return [item for item in _list(value) if isinstance(item, dict)]
