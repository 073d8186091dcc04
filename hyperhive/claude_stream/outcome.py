"""What a turn's events add up to: ``TurnAccumulator`` folds them into a ``TurnOutcome`` with a
``TurnErrorClass``; ``init_server_status`` checks an MCP server before the model acts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypedDict

from pydantic import BaseModel, Field

from hyperhive.claude_stream.events import (
    ApiRetryEvent,
    AssistantEvent,
    InitEvent,
    NoiseEvent,
    PermissionDenial,
    RateLimitEvent,
    ResultEvent,
    StreamEvent,
    TextBlock,
    ToolUseBlock,
    parse_line,
)
from hyperhive.domain import TurnErrorClass

_NOISE_KEPT = 10
_NOISE_LINE_LIMIT = 500

SESSION_MISSING_MARKER = "No conversation found with session ID"
NOT_LOGGED_IN_MARKER = "Not logged in"
# A retry hint in an error text. Never seen from claude 2.1.197 (its 429 texts carry the API's
# message or a wall-clock "resets 4:21pm (UTC)"); kept for API messages that do say it.
_RETRY_AFTER_TEXT = re.compile(
    r"retry[- _]after\D{0,4}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?)?\b",
    re.IGNORECASE,
)


def init_server_status(event: StreamEvent, server: str) -> str | None:
    """The status of MCP server ``server`` if ``event`` is the run's ``init`` (else None):
    ``connected``, or ``pending`` (it did not connect within MCP_CONNECT_TIMEOUT_MS), ``failed``,
    ``needs-auth``, ``disabled``, and ``missing`` when init does not list it at all."""
    if not isinstance(event, InitEvent):
        return None
    return event.mcp_servers.get(server, "missing")


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


class _Seen(TypedDict):
    """What the events before the result said: every outcome carries it, result or not."""

    session_id: str | None
    model: str | None
    mcp_servers: dict[str, str]
    mcp_failed: list[str]
    tool_calls: list[str]
    assistant_error: str | None
    rate_limit_resets_at: float | None
    noise: list[str]


class TurnAccumulator:
    """Feed a turn's events in order, then call ``outcome()`` (at any point, e.g. after a kill)."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._result: ResultEvent | None = None
        self._init: InitEvent | None = None
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
        if isinstance(event, NoiseEvent):
            if event.text.strip():
                self._noise = [*self._noise, event.text[:_NOISE_LINE_LIMIT]][-_NOISE_KEPT:]
            return
        if event.session_id and (self._session_id is None or isinstance(event, ResultEvent)):
            self._session_id = event.session_id
        match event:
            case InitEvent():
                self._init = event
            case ApiRetryEvent(retry_delay_ms=float() as delay):
                self._retry_delay_ms = delay
            case RateLimitEvent(status="rejected"):
                self._resets_at = event.resets_at
            case AssistantEvent():
                self._tool_calls += [b.name for b in event.content if isinstance(b, ToolUseBlock)]
                if event.error is not None:
                    self._assistant_error = event.error
                    # Every block counts, as "" when it has no text.
                    self._assistant_error_text = " ".join(
                        b.text if isinstance(b, TextBlock) else "" for b in event.content
                    )
            case ResultEvent():
                self._result = event

    def outcome(self, *, now: float | None = None) -> TurnOutcome:
        """The outcome so far. ``now`` (epoch seconds) turns a reset time into ``retry_after_s``."""
        init = self._init
        seen = _Seen(
            session_id=self._session_id,
            model=init.model if init is not None else None,
            mcp_servers=dict(init.mcp_servers) if init is not None else {},
            mcp_failed=init.failed_servers if init is not None else [],
            tool_calls=list(self._tool_calls),
            assistant_error=self._assistant_error,
            rate_limit_resets_at=self._resets_at,
            noise=list(self._noise),
        )
        result = self._result
        if result is None:
            detail = self._assistant_error_text or (self._noise[-1] if self._noise else "")
            return TurnOutcome(
                error_class=TurnErrorClass.CRASHED,
                result_text=self._assistant_error_text,
                error_message="claude ended without a result (killed or crashed)"
                + (f": {detail}" if detail else ""),
                retry_after_s=self._retry_hint(self._assistant_error_text, now),
                **seen,
            )
        text = result.text
        status = result.api_error_status
        session_missing = (
            result.is_error
            and status is None
            and any(SESSION_MISSING_MARKER in e for e in [*result.errors, text])
        )
        error_class = self._classify(result, session_missing)
        message = ""
        if error_class != TurnErrorClass.NONE:
            message = text or f"claude reported an error ({result.subtype or 'no detail'})"
            if status is not None and str(status) not in message:
                message = f"API {status}: {message}"
        usage = result.usage
        return TurnOutcome(
            error_class=error_class,
            error_message=message,
            session_missing=session_missing,
            got_result=True,
            is_error=result.is_error,
            result_text=text,
            subtype=result.subtype,
            terminal_reason=result.terminal_reason,
            api_error_status=status,
            errors=list(result.errors),
            cost_usd=result.total_cost_usd or 0.0,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            duration_ms=result.duration_ms,
            num_turns=result.num_turns,
            permission_denials=list(result.permission_denials),
            retry_after_s=self._retry_hint(text, now) if result.is_error else None,
            **seen,
        )

    def _retry_hint(self, text: str, now: float | None) -> float | None:
        if self._resets_at is not None and now is not None:
            return max(0.0, self._resets_at - now)
        if self._retry_delay_ms is not None:
            return self._retry_delay_ms / 1000
        return retry_after_from_text(text)

    def _classify(self, result: ResultEvent, session_missing: bool) -> TurnErrorClass:
        # By is_error and api_error_status, never by subtype: API errors keep subtype "success".
        if not result.is_error:
            return TurnErrorClass.NONE
        status = result.api_error_status
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
        text = result.text
        if self._assistant_error == "authentication_failed" or text.startswith(
            NOT_LOGGED_IN_MARKER
        ):
            return TurnErrorClass.NEEDS_LOGIN
        if self._assistant_error == "rate_limit":
            return TurnErrorClass.RATE_LIMITED
        if "overloaded_error" in text or self._assistant_error == "overloaded":
            return TurnErrorClass.OVERLOADED
        # The one subtype that means something of its own: the --max-turns limit.
        if result.subtype == "error_max_turns" or result.terminal_reason == "max_turns":
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
