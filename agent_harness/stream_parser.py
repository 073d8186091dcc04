"""Pure functions over ``claude -p --output-format stream-json --verbose`` stdout.

One JSON object per line. ``parse_line`` never raises: a line that is not a JSON object becomes a
``noise`` event. ``render`` turns an event into items for the operator's live page, and
``TurnAccumulator`` folds a turn's events into a ``TurnOutcome`` with a ``TurnErrorClass``.

What claude 2.1.197 prints (recorded in tests/unit/harness/transcripts, see REFERENCE §1):

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
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from hyperhive.domain import TurnErrorClass

NOISE = "noise"
RESULT_TEXT_LIMIT = 4000
_NOISE_KEPT = 10
_NOISE_LINE_LIMIT = 500

SESSION_MISSING_MARKER = "No conversation found with session ID"
NOT_LOGGED_IN_MARKER = "Not logged in"
MCP_FAILED_STATUSES = frozenset({"failed", "needs-auth"})
# A retry hint in an error text. Never seen from claude 2.1.197 (its 429 texts carry the API's
# message or a wall-clock "resets 4:21pm (UTC)"); kept for API messages that do say it.
_RETRY_AFTER_TEXT = re.compile(
    r"retry[- _]after\D{0,4}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?)?\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One stdout line: its ``type``/``subtype``/``session_id`` and the whole object (``raw``).

    A line that is not a JSON object has ``type == "noise"``, ``raw == {}`` and the line in
    ``text``.
    """

    type: str
    subtype: str | None = None
    session_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def is_noise(self) -> bool:
        return self.type == NOISE


def parse_line(line: str) -> StreamEvent:
    """Parse one stdout line; never raises."""
    stripped = line.strip()
    try:
        obj = json.loads(stripped) if stripped else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return StreamEvent(type=NOISE, text=line.rstrip("\r\n"))
    type_ = obj.get("type")
    subtype = obj.get("subtype")
    session_id = obj.get("session_id")
    return StreamEvent(
        type=type_ if isinstance(type_, str) else "unknown",
        subtype=subtype if isinstance(subtype, str) else None,
        session_id=session_id if isinstance(session_id, str) else None,
        raw=obj,
    )


def init_server_status(event: StreamEvent, server: str) -> str | None:
    """The status of MCP server ``server`` if ``event`` is the run's ``init`` (else None):
    ``connected``, or ``pending`` (it did not connect within MCP_CONNECT_TIMEOUT_MS), ``failed``,
    ``needs-auth``, ``disabled``, and ``missing`` when init does not list it at all."""
    if event.type != "system" or event.subtype != "init":
        return None
    return _mcp_servers(event.raw).get(server, "missing")


# -- rendering --------------------------------------------------------------------------------


class RenderKind(StrEnum):
    INIT = "init"
    TEXT = "text"
    THINKING = "thinking"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    RETRY = "retry"
    RATE_LIMIT = "rate_limit"
    ERROR = "error"
    RESULT = "result"
    NOISE = "noise"
    OTHER = "other"


class RenderedItem(BaseModel):
    """One line (or block) of the live view. ``text`` is what to show; the rest is for styling."""

    kind: RenderKind
    text: str
    is_error: bool = False
    tool_name: str | None = None
    tool_use_id: str | None = None
    # Structured detail for templates (tool arguments, token counts, ...), JSON-safe.
    detail: dict[str, Any] = Field(default_factory=dict)


def render(event: StreamEvent, *, max_chars: int = RESULT_TEXT_LIMIT) -> list[RenderedItem]:
    """A readable view of one event (possibly several items, possibly none)."""
    raw = event.raw
    if event.is_noise:
        return [RenderedItem(kind=RenderKind.NOISE, text=_clip(event.text, max_chars))]
    if event.type == "system":
        return _render_system(event, max_chars)
    if event.type == "assistant":
        return _render_assistant(raw, max_chars)
    if event.type == "user":
        return _render_user(raw, max_chars)
    if event.type == "rate_limit_event":
        return [_render_rate_limit(raw)]
    if event.type == "result":
        return [_render_result(raw, max_chars)]
    label = event.type + (f"/{event.subtype}" if event.subtype else "")
    return [RenderedItem(kind=RenderKind.OTHER, text=label)]


def _render_system(event: StreamEvent, max_chars: int) -> list[RenderedItem]:
    raw = event.raw
    if event.subtype == "init":
        servers = _mcp_servers(raw)
        tools = _list(raw.get("tools"))
        mcp = ", ".join(f"{name} {status}" for name, status in servers.items()) or "none"
        text = (
            f"session start · model {raw.get('model') or '?'} · MCP: {mcp} · "
            f"{len(tools)} tools · permissions {raw.get('permissionMode') or '?'}"
        )
        failed = _failed_servers(servers)
        return [
            RenderedItem(
                kind=RenderKind.INIT,
                text=text,
                is_error=bool(failed),
                detail={
                    "model": raw.get("model"),
                    "mcp_servers": servers,
                    "tools_count": len(tools),
                    "permission_mode": raw.get("permissionMode"),
                    "cwd": raw.get("cwd"),
                    "claude_code_version": raw.get("claude_code_version"),
                },
            )
        ]
    if event.subtype == "api_retry":
        delay_ms = _number(raw.get("retry_delay_ms"))
        delay = f" in {delay_ms / 1000:.1f} s" if delay_ms is not None else ""
        text = (
            f"API error {raw.get('error_status') or '?'} ({raw.get('error') or 'unknown'}): "
            f"retry {raw.get('attempt') or '?'}/{raw.get('max_retries') or '?'}{delay}"
        )
        return [
            RenderedItem(
                kind=RenderKind.RETRY,
                text=text,
                is_error=True,
                detail={
                    "attempt": raw.get("attempt"),
                    "max_retries": raw.get("max_retries"),
                    "retry_delay_ms": delay_ms,
                    "error_status": raw.get("error_status"),
                    "error": raw.get("error"),
                },
            )
        ]
    return [RenderedItem(kind=RenderKind.OTHER, text=f"system/{event.subtype or '?'}")]


def _render_assistant(raw: Mapping[str, Any], max_chars: int) -> list[RenderedItem]:
    message = _dict(raw.get("message"))
    synthetic_error = _str_or_none(raw.get("error"))
    items: list[RenderedItem] = []
    for block in _blocks(message.get("content")):
        kind = block.get("type")
        if kind == "text":
            text = _clip(str(block.get("text", "")), max_chars)
            if synthetic_error:
                items.append(
                    RenderedItem(
                        kind=RenderKind.ERROR,
                        text=text,
                        is_error=True,
                        detail={"error": synthetic_error},
                    )
                )
            else:
                items.append(RenderedItem(kind=RenderKind.TEXT, text=text))
        elif kind == "thinking":
            items.append(
                RenderedItem(
                    kind=RenderKind.THINKING, text=_clip(str(block.get("thinking", "")), max_chars)
                )
            )
        elif kind == "tool_use":
            name = str(block.get("name", "?"))
            arguments = _dict(block.get("input"))
            args_text = ", ".join(
                f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in arguments.items()
            )
            items.append(
                RenderedItem(
                    kind=RenderKind.TOOL_CALL,
                    text=_clip(f"{name}({args_text})", max_chars),
                    tool_name=name,
                    tool_use_id=_str_or_none(block.get("id")),
                    detail={"arguments": arguments},
                )
            )
    if synthetic_error and not items:
        items.append(
            RenderedItem(
                kind=RenderKind.ERROR,
                text=synthetic_error,
                is_error=True,
                detail={"error": synthetic_error},
            )
        )
    return items


def _render_user(raw: Mapping[str, Any], max_chars: int) -> list[RenderedItem]:
    message = _dict(raw.get("message"))
    items: list[RenderedItem] = []
    for block in _blocks(message.get("content")):
        if block.get("type") != "tool_result":
            continue
        is_error = block.get("is_error") is True
        items.append(
            RenderedItem(
                kind=RenderKind.TOOL_RESULT,
                text=_clip(tool_result_text(block), max_chars),
                is_error=is_error,
                tool_use_id=_str_or_none(block.get("tool_use_id")),
            )
        )
    return items


def _render_rate_limit(raw: Mapping[str, Any]) -> RenderedItem:
    info = _dict(raw.get("rate_limit_info"))
    status = str(info.get("status") or "?")
    resets_at = _number(info.get("resetsAt"))
    limit_type = info.get("rateLimitType")
    text = f"rate limit {status}" + (f" ({limit_type})" if limit_type else "")
    if resets_at is not None:
        text += " · resets " + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(resets_at))
    return RenderedItem(
        kind=RenderKind.RATE_LIMIT,
        text=text,
        is_error=status == "rejected",
        detail={"status": status, "resets_at": resets_at, "rate_limit_type": limit_type},
    )


def _render_result(raw: Mapping[str, Any], max_chars: int) -> RenderedItem:
    is_error = raw.get("is_error") is True
    usage = _usage(raw)
    cost = _number(raw.get("total_cost_usd")) or 0.0
    duration_ms = _int_or_none(raw.get("duration_ms"))
    num_turns = _int_or_none(raw.get("num_turns")) or 0
    status = _int_or_none(raw.get("api_error_status"))
    parts = [
        f"{num_turns} turn{'s' if num_turns != 1 else ''}",
        f"${cost:.4f}",
        f"tokens in {usage['input_tokens']} / out {usage['output_tokens']}"
        f" (cache read {usage['cache_read_input_tokens']},"
        f" write {usage['cache_creation_input_tokens']})",
    ]
    if duration_ms is not None:
        parts.append(f"{duration_ms / 1000:.1f} s")
    head = "turn failed" if is_error else "turn done"
    if is_error and status is not None:
        head += f" (API {status})"
    body = _result_text(raw)
    text = f"{head} · " + " · ".join(parts) + (f"\n{_clip(body, max_chars)}" if body else "")
    return RenderedItem(
        kind=RenderKind.RESULT,
        text=text,
        is_error=is_error,
        detail={
            "subtype": raw.get("subtype"),
            "api_error_status": status,
            "cost_usd": cost,
            "duration_ms": duration_ms,
            "num_turns": num_turns,
            **usage,
        },
    )


# -- the turn's outcome -----------------------------------------------------------------------


class PermissionDenial(BaseModel):
    tool_name: str
    tool_use_id: str | None = None
    tool_input: dict[str, Any] = Field(default_factory=dict)


class TurnOutcome(BaseModel):
    """What one ``claude -p`` process did, from its stdout alone."""

    error_class: TurnErrorClass
    # ``--resume`` named a session the CLI cannot find (in this HOME and cwd): start a fresh one.
    session_missing: bool = False
    got_result: bool = False
    session_id: str | None = None
    is_error: bool = False
    # The result's text, or its ``errors`` joined when it has no text (max turns, resume failure).
    result_text: str = ""
    # For the operator and logs: why the turn failed, in a line or two; "" when it did not.
    error_message: str = ""
    subtype: str | None = None
    terminal_reason: str | None = None
    api_error_status: int | None = None
    # The synthetic assistant message's ``error`` (authentication_failed, rate_limit, ...).
    assistant_error: str | None = None
    errors: list[str] = Field(default_factory=list)
    # ``total_cost_usd`` is per process, so this is the turn's cost.
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    duration_ms: int | None = None
    num_turns: int = 0
    permission_denials: list[PermissionDenial] = Field(default_factory=list)
    model: str | None = None
    # name → status from init: connected, failed, needs-auth, pending, disabled.
    mcp_servers: dict[str, str] = Field(default_factory=dict)
    # Those that failed to connect (failed, needs-auth); the turn runs without their tools.
    mcp_failed: list[str] = Field(default_factory=list)
    tool_calls: list[str] = Field(default_factory=list)
    # Failed turns only: seconds until the subscription limit resets (when ``outcome(now=...)``
    # was given a clock), else the CLI's own last retry delay (api_retry.retry_delay_ms, i.e. the
    # API's retry-after when it sent one), else a "retry after N s" in the error text. None when
    # the stream gives no hint, as with an API key and CLAUDE_CODE_MAX_RETRIES=0.
    retry_after_s: float | None = None
    # Subscription limits only: when the limit resets (epoch seconds, from rate_limit_event).
    rate_limit_resets_at: float | None = None
    # Stray stdout lines that were not JSON objects (the last few, clipped).
    noise: list[str] = Field(default_factory=list)

    def wait_s(self, now: float) -> float | None:
        """How long to wait before retrying, if the stream said (reset time wins over delay)."""
        if self.rate_limit_resets_at is not None:
            return max(0.0, self.rate_limit_resets_at - now)
        return self.retry_after_s


class TurnAccumulator:
    """Feed a turn's events in order, then call ``outcome()`` (at any point, e.g. after a kill)."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._result: Mapping[str, Any] | None = None
        self._model: str | None = None
        self._mcp_servers: dict[str, str] = {}
        self._tool_calls: list[str] = []
        self._assistant_error: str | None = None
        self._assistant_error_text: str = ""
        self._retry_delay_ms: float | None = None
        self._resets_at: float | None = None
        self._noise: list[str] = []

    def feed_line(self, line: str) -> StreamEvent:
        """Parse and feed one stdout line; returns the event (for rendering)."""
        event = parse_line(line)
        self.feed(event)
        return event

    def feed(self, event: StreamEvent) -> None:
        raw = event.raw
        if event.is_noise:
            if event.text.strip():
                self._noise = [*self._noise, event.text[:_NOISE_LINE_LIMIT]][-_NOISE_KEPT:]
            return
        if event.session_id and (self._session_id is None or event.type == "result"):
            self._session_id = event.session_id
        if event.type == "system" and event.subtype == "init":
            model = raw.get("model")
            self._model = model if isinstance(model, str) else None
            self._mcp_servers = _mcp_servers(raw)
        elif event.type == "system" and event.subtype == "api_retry":
            delay = _number(raw.get("retry_delay_ms"))
            if delay is not None:
                self._retry_delay_ms = delay
        elif event.type == "rate_limit_event":
            info = raw.get("rate_limit_info")
            if isinstance(info, dict) and info.get("status") == "rejected":
                self._resets_at = _number(info.get("resetsAt"))
        elif event.type == "assistant":
            message = _dict(raw.get("message"))
            for block in _blocks(message.get("content")):
                if block.get("type") == "tool_use":
                    self._tool_calls.append(str(block.get("name", "?")))
            error = raw.get("error")
            if isinstance(error, str) and error:
                self._assistant_error = error
                self._assistant_error_text = " ".join(
                    str(b.get("text", "")) for b in _blocks(message.get("content"))
                )
        elif event.type == "result":
            self._result = raw

    def outcome(self, *, now: float | None = None) -> TurnOutcome:
        """The outcome so far. ``now`` (epoch seconds) turns a reset time into ``retry_after_s``."""
        common: dict[str, Any] = {
            "session_id": self._session_id,
            "model": self._model,
            "mcp_servers": dict(self._mcp_servers),
            "mcp_failed": _failed_servers(self._mcp_servers),
            "tool_calls": list(self._tool_calls),
            "assistant_error": self._assistant_error,
            "rate_limit_resets_at": self._resets_at,
            "noise": list(self._noise),
        }
        raw = self._result
        if raw is None:
            detail = self._assistant_error_text or (self._noise[-1] if self._noise else "")
            return TurnOutcome(
                error_class=TurnErrorClass.CRASHED,
                result_text=self._assistant_error_text,
                error_message="claude ended without a result (killed or crashed)"
                + (f": {detail}" if detail else ""),
                retry_after_s=self._retry_hint(self._assistant_error_text, now),
                **common,
            )
        errors = [str(e) for e in raw.get("errors") or [] if e is not None]
        text = _result_text(raw)
        status = _int_or_none(raw.get("api_error_status"))
        is_error = raw.get("is_error") is True
        session_missing = (
            is_error
            and status is None
            and any(SESSION_MISSING_MARKER in e for e in [*errors, text])
        )
        usage = _usage(raw)
        error_class = self._classify(raw, is_error, status, text, session_missing)
        message = ""
        if error_class != TurnErrorClass.NONE:
            message = text or f"claude reported an error ({raw.get('subtype') or 'no detail'})"
            if status is not None and str(status) not in message:
                message = f"API {status}: {message}"
        return TurnOutcome(
            error_class=error_class,
            error_message=message,
            session_missing=session_missing,
            got_result=True,
            is_error=is_error,
            result_text=text,
            subtype=_str_or_none(raw.get("subtype")),
            terminal_reason=_str_or_none(raw.get("terminal_reason")),
            api_error_status=status,
            errors=errors,
            cost_usd=_number(raw.get("total_cost_usd")) or 0.0,
            duration_ms=_int_or_none(raw.get("duration_ms")),
            num_turns=_int_or_none(raw.get("num_turns")) or 0,
            permission_denials=_denials(raw.get("permission_denials")),
            retry_after_s=self._retry_hint(text, now) if is_error else None,
            **usage,
            **common,
        )

    def _retry_hint(self, text: str, now: float | None) -> float | None:
        if self._resets_at is not None and now is not None:
            return max(0.0, self._resets_at - now)
        if self._retry_delay_ms is not None:
            return self._retry_delay_ms / 1000
        return retry_after_from_text(text)

    def _classify(
        self,
        raw: Mapping[str, Any],
        is_error: bool,
        status: int | None,
        text: str,
        session_missing: bool,
    ) -> TurnErrorClass:
        # By is_error and api_error_status, never by subtype: API errors keep subtype "success".
        if not is_error:
            return TurnErrorClass.NONE
        if status is not None:
            if status in (401, 403):
                return TurnErrorClass.NEEDS_LOGIN
            if status == 429:
                return TurnErrorClass.RATE_LIMITED
            if status == 529:
                return TurnErrorClass.OVERLOADED
            return TurnErrorClass.API_ERROR
        if session_missing:
            # Nothing reached the model; the caller starts a fresh session (``session_missing``).
            return TurnErrorClass.CRASHED
        if self._assistant_error == "authentication_failed" or text.startswith(
            NOT_LOGGED_IN_MARKER
        ):
            return TurnErrorClass.NEEDS_LOGIN
        if self._assistant_error == "rate_limit":
            return TurnErrorClass.RATE_LIMITED
        if "overloaded_error" in text or self._assistant_error == "overloaded":
            return TurnErrorClass.OVERLOADED
        # The one subtype that means something of its own: the --max-turns limit.
        if raw.get("subtype") == "error_max_turns" or raw.get("terminal_reason") == "max_turns":
            return TurnErrorClass.MAX_TURNS
        return TurnErrorClass.API_ERROR


def outcome_of_lines(lines: Iterable[str], *, now: float | None = None) -> TurnOutcome:
    """The outcome of a whole transcript (an iterable of stdout lines)."""
    acc = TurnAccumulator()
    for line in lines:
        acc.feed_line(line)
    return acc.outcome(now=now)


def retry_after_from_text(text: str) -> float | None:
    """Seconds from a "retry after N [ms|s]" in an error text, if any."""
    match = _RETRY_AFTER_TEXT.search(text or "")
    if match is None:
        return None
    value = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    return value / 1000 if unit.startswith("m") else value


# -- helpers ----------------------------------------------------------------------------------


def tool_result_text(block: Mapping[str, Any]) -> str:
    """The text of a tool_result block, whose ``content`` is a string or a list of blocks."""
    content = block.get("content")
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for item in _blocks(content):
        if item.get("type") == "text":
            parts.append(str(item.get("text", "")))
        elif item.get("type") == "image":
            parts.append("[image]")
        else:
            parts.append(f"[{item.get('type', '?')}]")
    return "\n".join(parts)


def _result_text(raw: Mapping[str, Any]) -> str:
    result = raw.get("result")
    if isinstance(result, str) and result:
        return result
    return "; ".join(str(e) for e in raw.get("errors") or [] if e is not None)


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict)]


def _mcp_servers(raw: Mapping[str, Any]) -> dict[str, str]:
    servers: dict[str, str] = {}
    for server in raw.get("mcp_servers") or []:
        if isinstance(server, dict) and isinstance(server.get("name"), str):
            servers[server["name"]] = str(server.get("status") or "unknown")
    return servers


def _failed_servers(servers: Mapping[str, str]) -> list[str]:
    # "pending" (e.g. a run that ended before the servers were up, as "Not logged in" does) and
    # "disabled" are not failures.
    return [name for name, status in servers.items() if status in MCP_FAILED_STATUSES]


def _usage(raw: Mapping[str, Any]) -> dict[str, int]:
    usage = _dict(raw.get("usage"))
    return {
        key: _int_or_none(usage.get(key)) or 0
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    }


def _denials(value: Any) -> list[PermissionDenial]:
    denials: list[PermissionDenial] = []
    for item in value or []:
        if not isinstance(item, dict):
            continue
        tool_input = item.get("tool_input")
        denials.append(
            PermissionDenial(
                tool_name=str(item.get("tool_name", "?")),
                tool_use_id=_str_or_none(item.get("tool_use_id")),
                tool_input=tool_input if isinstance(tool_input, dict) else {},
            )
        )
    return denials


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int_or_none(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _clip(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
