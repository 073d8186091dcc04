"""Events as readable items, for the operator's live agent page and ``hive logs``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from hyperhive.claude_stream.events import (
    ApiRetryEvent,
    AssistantEvent,
    InitEvent,
    NoiseEvent,
    OtherEvent,
    RateLimitEvent,
    ResultEvent,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserEvent,
)

RESULT_TEXT_LIMIT = 4000


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
    match event:
        case NoiseEvent():
            return [RenderedItem(kind=RenderKind.NOISE, text=_clip(event.text, max_chars))]
        case InitEvent():
            return [_render_init(event)]
        case ApiRetryEvent():
            return [_render_retry(event)]
        case AssistantEvent():
            return _render_assistant(event, max_chars)
        case UserEvent():
            return _render_user(event, max_chars)
        case RateLimitEvent():
            return [_render_rate_limit(event)]
        case ResultEvent():
            return [_render_result(event, max_chars)]
        case OtherEvent():
            return [RenderedItem(kind=RenderKind.OTHER, text=_other_label(event))]


def _other_label(event: OtherEvent) -> str:
    if event.type == "system":
        return f"system/{event.subtype or '?'}"
    return event.type + (f"/{event.subtype}" if event.subtype else "")


def _render_init(event: InitEvent) -> RenderedItem:
    servers = event.mcp_servers
    mcp = ", ".join(f"{name} {status}" for name, status in servers.items()) or "none"
    text = (
        f"session start · model {event.model or '?'} · MCP: {mcp} · "
        f"{event.tool_count} tools · permissions {event.permission_mode or '?'}"
    )
    return RenderedItem(
        kind=RenderKind.INIT,
        text=text,
        is_error=bool(event.failed_servers),
        detail={
            "model": event.model,
            "mcp_servers": servers,
            "tools_count": event.tool_count,
            "permission_mode": event.permission_mode,
            "cwd": event.cwd,
            "claude_code_version": event.claude_code_version,
        },
    )


def _render_retry(event: ApiRetryEvent) -> RenderedItem:
    delay_ms = event.retry_delay_ms
    delay = f" in {delay_ms / 1000:.1f} s" if delay_ms is not None else ""
    text = (
        f"API error {event.error_status or '?'} ({event.error or 'unknown'}): "
        f"retry {event.attempt or '?'}/{event.max_retries or '?'}{delay}"
    )
    return RenderedItem(
        kind=RenderKind.RETRY,
        text=text,
        is_error=True,
        detail={
            "attempt": event.attempt,
            "max_retries": event.max_retries,
            "retry_delay_ms": delay_ms,
            "error_status": event.error_status,
            "error": event.error,
        },
    )


def _render_assistant(event: AssistantEvent, max_chars: int) -> list[RenderedItem]:
    synthetic_error = event.error
    items: list[RenderedItem] = []
    for block in event.content:
        match block:
            case TextBlock(text=text) if synthetic_error:
                items.append(
                    RenderedItem(
                        kind=RenderKind.ERROR,
                        text=_clip(text, max_chars),
                        is_error=True,
                        detail={"error": synthetic_error},
                    )
                )
            case TextBlock(text=text):
                items.append(RenderedItem(kind=RenderKind.TEXT, text=_clip(text, max_chars)))
            case ThinkingBlock(thinking=thinking):
                items.append(
                    RenderedItem(kind=RenderKind.THINKING, text=_clip(thinking, max_chars))
                )
            case ToolUseBlock(name=name, id=tool_use_id, input=arguments):
                args_text = ", ".join(
                    f"{key}={json.dumps(value, ensure_ascii=False)}"
                    for key, value in arguments.items()
                )
                items.append(
                    RenderedItem(
                        kind=RenderKind.TOOL_CALL,
                        text=_clip(f"{name}({args_text})", max_chars),
                        tool_name=name,
                        tool_use_id=tool_use_id,
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


def _render_user(event: UserEvent, max_chars: int) -> list[RenderedItem]:
    return [
        RenderedItem(
            kind=RenderKind.TOOL_RESULT,
            text=_clip(block.text, max_chars),
            is_error=block.is_error,
            tool_use_id=block.tool_use_id,
        )
        for block in event.content
        if isinstance(block, ToolResultBlock)
    ]


def _render_rate_limit(event: RateLimitEvent) -> RenderedItem:
    status = event.status or "?"
    resets_at = event.resets_at
    limit_type = event.rate_limit_type
    text = f"rate limit {status}" + (f" ({limit_type})" if limit_type else "")
    if resets_at is not None:
        text += " · resets " + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(resets_at))
    return RenderedItem(
        kind=RenderKind.RATE_LIMIT,
        text=text,
        is_error=status == "rejected",
        detail={"status": status, "resets_at": resets_at, "rate_limit_type": limit_type},
    )


def _render_result(event: ResultEvent, max_chars: int) -> RenderedItem:
    usage = event.usage
    cost = event.total_cost_usd or 0.0
    duration_ms = event.duration_ms
    num_turns = event.num_turns
    status = event.api_error_status
    parts = [
        f"{num_turns} turn{'s' if num_turns != 1 else ''}",
        f"${cost:.4f}",
        f"tokens in {usage.input_tokens} / out {usage.output_tokens}"
        f" (cache read {usage.cache_read_input_tokens},"
        f" write {usage.cache_creation_input_tokens})",
    ]
    if duration_ms is not None:
        parts.append(f"{duration_ms / 1000:.1f} s")
    head = "turn failed" if event.is_error else "turn done"
    if event.is_error and status is not None:
        head += f" (API {status})"
    body = event.text
    text = f"{head} · " + " · ".join(parts) + (f"\n{_clip(body, max_chars)}" if body else "")
    return RenderedItem(
        kind=RenderKind.RESULT,
        text=text,
        is_error=event.is_error,
        detail={
            "subtype": event.subtype,
            "api_error_status": status,
            "cost_usd": cost,
            "duration_ms": duration_ms,
            "num_turns": num_turns,
            **asdict(usage),
        },
    )


def _clip(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
