"""A scripted fake of the Anthropic Messages API, for driving the real claude CLI in tests.

Point the CLI at it with ``ANTHROPIC_BASE_URL=fake.base_url`` and any ``ANTHROPIC_API_KEY``::

    with FakeAnthropic() as fake:
        fake.script(ToolUse("mcp__echo__record", {"text": "hi"}), Text("done"))
        ...run claude...
        assert fake.last_tool_results()[0]["content"] ...

Turn requests (those that carry ``tools``) consume the script, one step per request; side
requests (no ``tools``: titles, probes) get a short text and leave every script alone. A request
takes its step from the first ``script_when(predicate, ...)`` queue (in the order they were
registered) whose predicate accepts it and that still holds a step, else from the global
``script()`` FIFO; with both empty, ``responder`` decides; without one the model says
``NOTHING_SCRIPTED``.

A step may be a callable ``(RecordedRequest) -> Step``, run when its request arrives, so its input
can come from what the model was just sent (a tool's output). The built-in tools have typed
``ToolUse`` helpers with the input shapes claude 2.1.197 offers: ``Bash``, ``Read``, ``Write``,
``Edit``. ``RecordedRequest`` tells what reached the model: ``system_text``, ``model``,
``tool_names``, ``tool_result_texts``/``last_tool_result``, ``messages_text``, ``prompt``::

    fake.script_when(
        for_agent("alice"),  # tests.rig.agent_scripts: alice's turn requests only
        Bash("git rev-parse HEAD", "Show the commit"),
        lambda r: ToolUse("mcp__hive__request_apply_commit",
                          {"name": "alice", "sha": (r.last_tool_result or "").strip(),
                           "description": "new prompt"}),
        Text("asked"),
    )
    ...run claude -p --permission-mode bypassPermissions (IS_SANDBOX=1 as root)...
    assert "MARKER" in fake.turn_requests()[0].system_text

A callable step or predicate that raises is a test bug, kept in ``errors`` (the pytest fixture
fails the test) and answered with a 500, as is a broken ``responder``.

The server is uvicorn in a daemon thread on a socket bound and listening before the thread starts,
so ``base_url`` accepts connections at once (the kernel queues them) and nothing polls for
readiness.

Observed with claude 2.1.197 (beyond /work/shared/REFERENCE.md §1), API key auth:
- A ``-p`` run sends ``HEAD /`` (user-agent ``Bun/…``; any 2xx will do), then the turn's
  ``POST /v1/messages?beta=true``. Nothing called ``count_tokens`` (served anyway) and no
  ``quota``-style probe showed up.
- The side request seen is the session title: ``tools: []``, ``thinking`` disabled and
  ``output_config.format`` a JSON schema ``{"title": string}``, so it is answered with JSON of
  that shape. It is sent only for some prompts (one of a few words got none) and
  ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` suppresses it.
- Turn requests: ``tools`` (built-ins plus ``mcp__<server>__<tool>``), a list ``system``,
  ``stream: true``, ``max_tokens: 64000``, ``thinking: {"type": "adaptive"}``,
  ``context_management``, ``metadata.user_id`` (a JSON string holding the session id); headers
  ``x-api-key``, ``anthropic-version: 2023-06-01``, ``anthropic-beta``, ``x-app: cli`` and
  ``x-claude-code-session-id`` (the stream-json ``session_id``). The first turn's user message
  starts with a ``<system-reminder>`` text (sometimes merged into the prompt's text block) and
  ``messages`` ends with a ``role: "system"`` entry; ``RecordedRequest.prompt`` strips the
  reminders. After a tool call the last user message holds only the ``tool_result`` block.
- An MCP tool with an output schema (SDK default for ``-> str``) reaches the model as the JSON of
  ``structuredContent`` (``'{"result":"…"}'``), not its text content.
- ``CLAUDE_CODE_MAX_RETRIES=0`` turns an HTTP 401/429/529 into ``result.is_error`` with
  ``api_error_status`` after one request (~0.6 s run), but an error *event inside a 200 stream*
  (``ApiError(in_stream=True)``) is retried silently anyway: 4 requests, ~2 s, then
  ``api_error_status`` 529 if all fail. ``x-stainless-retry-count`` stays ``0`` on the CLI's
  own retries.
- A hung request with ``API_TIMEOUT_MS=2000`` ends the run in ~2 s: ``is_error`` true,
  ``api_error_status`` null, ``result`` "Request timed out", rc 1.
- ``--resume <id>`` sends the earlier exchange again, followed by the new prompt.
- Built-in tools under ``--permission-mode bypassPermissions``: ``tools`` offers ``Bash``,
  ``Read``, ``Write``, ``Edit`` and more, but **no ``Glob`` or ``Grep``**: calling them answers
  ``No such tool available: Glob. Glob is not available in this session — find files with `find`
  via the Bash tool instead.`` (``is_error``). **``Edit`` or ``Write`` of an existing file that was
  not ``Read`` in the session is refused**: ``<tool_use_error>File has not been read yet. Read it
  first before writing to it.</tool_use_error>``, ``is_error`` true, file untouched. A file the
  session created with ``Write`` may be edited without a ``Read``. Results seen by the model:
  ``Write`` → ``File created successfully at: <file_path> (file state is current in your context
  — no need to Read it back)``; ``Read`` → numbered lines (``1\\talpha\\n2\\tbeta\\n3\\t``);
  ``Edit`` → ``The file <path> has been updated successfully. (…)``; ``Bash`` → stdout then
  stderr (``is_error`` false), or on a non-zero exit ``Exit code 3\\nout\\nerr`` with ``is_error``
  true. ``Bash`` runs in the CLI's cwd and ``Write`` accepts a relative path (resolved against the
  cwd) although its schema says absolute.
- ``--model some-model`` is sent as ``"model": "some-model"``; ``--append-system-prompt`` ends
  up in the last text block of the (list) ``system`` field.
- ``-p`` connects MCP servers in the background: a stdio server slower than the first request (a
  Python start-up on a loaded machine took 7 s) is ``pending`` in ``init`` and its tools are not
  in that request's ``tools``, whatever ``MCP_CONNECT_TIMEOUT_MS`` says. With
  ``MCP_CONNECTION_NONBLOCKING=0`` (and ``MCP_CONNECT_TIMEOUT_MS=60000``) the CLI waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal, TypeAlias

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

NOTHING_SCRIPTED = "(fake model: nothing scripted)"
SIDE_REPLY = "ok"


class Gate:
    """A latch a step waits on (``hang=``) until the test calls ``open()``, from any thread.

    Works across event loops: the fake's server loop waits on its own ``asyncio.Event`` that
    ``open()`` sets thread-safely, so a hung request costs no thread and no polling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def open(self) -> None:
        with self._lock:
            self._opened = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody left waiting
                loop.call_soon_threadsafe(event.set)

    @property
    def is_open(self) -> bool:
        return self._opened

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._opened:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


@dataclass(frozen=True)
class Text:
    """An assistant text block; as a step, a reply of this one block (stop_reason end_turn)."""

    text: str
    delay_s: float = 0.0
    hang: Gate | None = None


@dataclass(frozen=True)
class ToolUse:
    """A tool_use block (its id is generated); as a step, a reply of this one block."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: Gate | None = None


class Bash(ToolUse):
    """Claude's ``Bash`` tool: ``{"command", "description"?, "timeout"?, "run_in_background"?}``.

    ``timeout`` is in milliseconds. It runs in the CLI's cwd; its result is the command's output.
    """

    def __init__(
        self,
        command: str,
        description: str | None = None,
        *,
        timeout_ms: int | None = None,
        run_in_background: bool = False,
        delay_s: float = 0.0,
        hang: Gate | None = None,
    ) -> None:
        tool_input: dict[str, Any] = {"command": command}
        if description is not None:
            tool_input["description"] = description
        if timeout_ms is not None:
            tool_input["timeout"] = timeout_ms
        if run_in_background:
            tool_input["run_in_background"] = True
        super().__init__("Bash", tool_input, delay_s, hang)


class Read(ToolUse):
    """Claude's ``Read`` tool: ``{"file_path", "offset"?, "limit"?}`` (lines; path absolute).

    Needed before an ``Edit`` or ``Write`` of a file that existed before the session.
    """

    def __init__(
        self,
        file_path: str | PathLike[str],
        *,
        offset: int | None = None,
        limit: int | None = None,
        delay_s: float = 0.0,
        hang: Gate | None = None,
    ) -> None:
        tool_input: dict[str, Any] = {"file_path": str(file_path)}
        if offset is not None:
            tool_input["offset"] = offset
        if limit is not None:
            tool_input["limit"] = limit
        super().__init__("Read", tool_input, delay_s, hang)


class Write(ToolUse):
    """Claude's ``Write`` tool: ``{"file_path", "content"}``.

    Creates or overwrites; overwriting a file that existed before the session needs a ``Read`` of
    it first, else the CLI refuses (``File has not been read yet``).
    """

    def __init__(
        self,
        file_path: str | PathLike[str],
        content: str,
        *,
        delay_s: float = 0.0,
        hang: Gate | None = None,
    ) -> None:
        super().__init__("Write", {"file_path": str(file_path), "content": content}, delay_s, hang)


class Edit(ToolUse):
    """Claude's ``Edit`` tool: ``{"file_path", "old_string", "new_string", "replace_all"?}``.

    Refused (``File has not been read yet``) unless the session ``Read`` or wrote the file first;
    ``old_string`` must occur exactly once unless ``replace_all`` (else ``Found 2 matches``).
    """

    def __init__(
        self,
        file_path: str | PathLike[str],
        old_string: str,
        new_string: str,
        *,
        replace_all: bool = False,
        delay_s: float = 0.0,
        hang: Gate | None = None,
    ) -> None:
        tool_input: dict[str, Any] = {
            "file_path": str(file_path),
            "old_string": old_string,
            "new_string": new_string,
        }
        if replace_all:
            tool_input["replace_all"] = True
        super().__init__("Edit", tool_input, delay_s, hang)


Block: TypeAlias = Text | ToolUse


@dataclass(frozen=True)
class Reply:
    """Several blocks in one assistant message, e.g. ``Reply(Text("let me"), ToolUse(...))``.

    ``stop_reason`` defaults to ``tool_use`` if any block is a tool use, else ``end_turn``.
    Only the Reply's own ``delay_s``/``hang`` count; those of its blocks are ignored.
    """

    blocks: tuple[Block, ...]
    delay_s: float = 0.0
    hang: Gate | None = None
    stop_reason: str | None = None

    def __init__(
        self,
        *blocks: Block,
        delay_s: float = 0.0,
        hang: Gate | None = None,
        stop_reason: str | None = None,
    ) -> None:
        # Frozen dataclass with a varargs constructor: assign through object.__setattr__.
        object.__setattr__(self, "blocks", tuple(blocks))
        object.__setattr__(self, "delay_s", delay_s)
        object.__setattr__(self, "hang", hang)
        object.__setattr__(self, "stop_reason", stop_reason)


@dataclass(frozen=True)
class ApiError:
    """An HTTP error with Anthropic's error body (``{"type":"error","error":{…}}``)."""

    status: int
    error_type: str
    message: str = "fake error"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: Gate | None = None
    # True: answer 200 and send the error as an SSE ``error`` event after ``message_start``, as
    # the real API does when it overloads mid-response (only for streamed requests).
    in_stream: bool = False

    @classmethod
    def unauthorized(cls) -> ApiError:
        return cls(401, "authentication_error", "invalid x-api-key")

    @classmethod
    def rate_limited(cls, retry_after_s: int = 30) -> ApiError:
        # The reset headers are RFC 3339 times, as the real API sends them.
        reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + retry_after_s))
        return cls(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            {
                "retry-after": str(retry_after_s),
                "anthropic-ratelimit-requests-reset": reset,
                "anthropic-ratelimit-tokens-reset": reset,
                "anthropic-ratelimit-input-tokens-reset": reset,
                "anthropic-ratelimit-output-tokens-reset": reset,
            },
        )

    @classmethod
    def overloaded(cls) -> ApiError:
        return cls(529, "overloaded_error", "Overloaded")


Step: TypeAlias = Text | ToolUse | Reply | ApiError
# A step computed when its request arrives (from what the model was sent); also a responder.
StepFn: TypeAlias = Callable[["RecordedRequest"], Step]
Responder: TypeAlias = StepFn
Scripted: TypeAlias = Step | StepFn
# Which turn requests a ``script_when`` queue serves.
RequestPredicate: TypeAlias = Callable[["RecordedRequest"], bool]
RequestKind: TypeAlias = Literal["turn", "side", "count_tokens", "probe", "other"]
_STEP_TYPES = (Text, ToolUse, Reply, ApiError)


def _nothing_scripted(request: RecordedRequest) -> Step:
    return Text(NOTHING_SCRIPTED)


@dataclass
class RecordedRequest:
    """One request as the fake saw it, plus what it answered (``reply``)."""

    index: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    kind: RequestKind
    last_user_text: str = ""
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    # The assistant message sent back (with generated tool_use ids) or the error; set once known.
    reply: dict[str, Any] | None = None
    error: ApiError | None = None
    # When the fake received it (time.time(): a wall clock, comparable across processes).
    received_at: float = field(default_factory=time.time)

    @property
    def is_side(self) -> bool:
        return self.kind == "side"

    @property
    def prompt(self) -> str:
        """``last_user_text`` without the CLI's ``<system-reminder>`` blocks: what was typed."""
        return _SYSTEM_REMINDER.sub("", self.last_user_text).strip()

    @property
    def model(self) -> str:
        """The request's ``model`` ("" if none)."""
        return str((self.body or {}).get("model") or "")

    @property
    def system_text(self) -> str:
        """Every text of the ``system`` field (a string or a list of blocks), joined by newlines."""
        return _texts_of((self.body or {}).get("system"))

    @property
    def tool_names(self) -> list[str]:
        """The names of the ``tools`` offered, in order ([] for side requests)."""
        tools = (self.body or {}).get("tools") or []
        return [str(t["name"]) for t in tools if isinstance(t, dict) and "name" in t]

    @property
    def tool_result_texts(self) -> list[str]:
        """The texts of the tool_result blocks of the last user message, in order."""
        return [tool_result_text(r) for r in self.tool_results]

    @property
    def last_tool_result(self) -> str | None:
        """The text of the last tool_result of the last user message; None if there is none."""
        texts = self.tool_result_texts
        return texts[-1] if texts else None

    @property
    def messages_text(self) -> str:
        """Every user text of the conversation (all user messages, reminders included), joined.

        For "did X reach the model at all"; tool results are not in it (``tool_result_texts``).
        """
        messages = (self.body or {}).get("messages") or []
        return "\n".join(
            text
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
            for text in [_texts_of(m.get("content"))]
            if text
        )


_SYSTEM_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


def _last_user_message(messages: Iterable[Any]) -> dict[str, Any] | None:
    # Turn requests can end with a role "system" entry after the user's message.
    for message in reversed(list(messages)):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def _user_text_and_tool_results(body: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    message = _last_user_message(body.get("messages") or [])
    if message is None:
        return "", []
    content = message.get("content")
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    results: list[dict[str, Any]] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            results.append(block)
    return "\n".join(texts), results


def _texts_of(content: object) -> str:
    """The text of a string, or the ``text`` blocks of a list joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        str(b.get("text", ""))
        for b in content
        if isinstance(b, dict) and b.get("type", "text") == "text" and "text" in b
    )


def tool_result_text(result: Mapping[str, Any]) -> str:
    """The text of a tool_result block, whose ``content`` is a string or a list of blocks."""
    content = result.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(
        str(b.get("text", "")) for b in content or [] if isinstance(b, dict) and "text" in b
    )


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class FakeAnthropic:
    """The controller: script steps, inspect requests, run the server (``start``/``stop``)."""

    def __init__(self, responder: Responder | None = None, *, side_reply: str = SIDE_REPLY) -> None:
        self.responder = responder
        self.side_reply = side_reply
        self._steps: deque[Scripted] = deque()
        # script_when queues, checked in registration order before the global FIFO.
        self._conditional: list[tuple[RequestPredicate, deque[Scripted]]] = []
        self._requests: list[RecordedRequest] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._gates: list[Gate] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._base_url: str | None = None
        # Exceptions raised by step functions, predicates or ``responder``; the pytest fixture
        # fails the test if any.
        self.errors: list[Exception] = []
        self.app = Starlette(
            routes=[
                Route("/", self._root, methods=["GET", "HEAD"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route(
                    "/{path:path}",
                    self._unknown,
                    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                ),
            ]
        )

    # -- scripting -------------------------------------------------------------------------------

    def script(self, *steps: Scripted) -> None:
        """Append steps (or callables returning one) to the FIFO consumed by turn requests."""
        with self._cond:
            for step in steps:
                self._remember_gates(step)
                self._steps.append(step)

    def script_when(self, predicate: RequestPredicate, *steps: Scripted) -> None:
        """A FIFO of steps consumed only by turn requests that ``predicate`` accepts.

        Checked before the global ``script()`` FIFO; several queues are tried in the order they
        were registered, and a queue whose steps are used up no longer matches anything. The
        predicate runs on the server's thread for each turn request while its queue has steps
        (side requests never reach it): keep it quick and pure.
        """
        with self._cond:
            for step in steps:
                self._remember_gates(step)
            self._conditional.append((predicate, deque(steps)))

    def pending_steps(self) -> int:
        """Steps not yet consumed, over the global FIFO and every ``script_when`` queue."""
        with self._cond:
            return len(self._steps) + sum(len(q) for _, q in self._conditional)

    def _remember_gates(self, step: Scripted) -> None:
        # stop() opens every gate, so a test that forgot one cannot wedge the server's shutdown.
        if isinstance(step, _STEP_TYPES) and step.hang is not None:
            self._gates.append(step.hang)

    def _take_scripted(self, request: RecordedRequest) -> Scripted | None:
        with self._cond:
            for predicate, queue in self._conditional:
                if queue and predicate(request):
                    return queue.popleft()
            return self._steps.popleft() if self._steps else None

    def _next_step(self, request: RecordedRequest) -> Step:
        scripted = self._take_scripted(request)
        if scripted is None:
            scripted = self.responder or _nothing_scripted
        # Callables (scripted or the responder) run outside the lock: they may inspect the fake.
        step = scripted if isinstance(scripted, _STEP_TYPES) else scripted(request)
        if not isinstance(step, _STEP_TYPES):
            raise TypeError(f"fake model: a step function returned {step!r}, not a Step")
        with self._cond:
            self._remember_gates(step)
        return step

    # -- inspection ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def turn_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "turn"]

    def side_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "side"]

    def last_tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the latest turn request ([] if none)."""
        turns = self.turn_requests()
        return turns[-1].tool_results if turns else []

    def wait_for_requests(
        self, n: int, timeout: float = 30.0, kind: RequestKind | None = "turn"
    ) -> list[RecordedRequest]:
        """Block until at least ``n`` requests of ``kind`` (None: any) arrived; return them all.

        Requests are recorded on arrival, before any delay or hang, so this also tells a test
        that a hung request has reached the model.
        """

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if kind is None or r.kind == kind]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= n, timeout):
                raise TimeoutError(
                    f"fake model: {len(matching())} of {n} {kind or 'any'} requests "
                    f"after {timeout}s; seen {[(r.kind, r.path) for r in self._requests]}"
                )
            return matching()

    def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 60.0
    ) -> RecordedRequest:
        """Block until a request matching ``predicate`` has arrived; return the first such."""

        def first() -> RecordedRequest | None:
            return next((r for r in self._requests if predicate(r)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: first() is not None, timeout):
                raise TimeoutError(
                    f"fake model: no matching request after {timeout}s; prompts seen: "
                    f"{[r.prompt[:80] for r in self._requests if r.kind == 'turn']}"
                )
            found = first()
            assert found is not None
            return found

    async def wait_for_async(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 60.0
    ) -> RecordedRequest:
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    async def wait_for_requests_async(
        self, n: int, timeout: float = 30.0, kind: RequestKind | None = "turn"
    ) -> list[RecordedRequest]:
        return await asyncio.to_thread(self.wait_for_requests, n, timeout, kind)

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            request.index = len(self._requests)
            self._requests.append(request)
            self._cond.notify_all()

    # -- HTTP handlers ---------------------------------------------------------------------------

    async def _new_record(self, request: Request, kind: RequestKind) -> RecordedRequest:
        raw = await request.body()
        body: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, dict) else None
        if kind == "turn" and body is not None and not body.get("tools"):
            kind = "side"
        text, results = _user_text_and_tool_results(body or {})
        return RecordedRequest(
            index=-1,  # set by _record
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers),
            body=body,
            kind=kind,
            last_user_text=text,
            tool_results=results,
        )

    async def _root(self, request: Request) -> Response:
        self._record(await self._new_record(request, "probe"))
        return Response(status_code=200)

    async def _unknown(self, request: Request) -> Response:
        record = await self._new_record(request, "other")
        self._record(record)
        log.warning("fake model: unhandled %s %s", request.method, request.url.path)
        return JSONResponse(
            {
                "type": "error",
                "error": {
                    "type": "not_found_error",
                    "message": f"fake model does not serve {request.method} {request.url.path}",
                },
            },
            status_code=404,
        )

    async def _count_tokens(self, request: Request) -> Response:
        record = await self._new_record(request, "count_tokens")
        self._record(record)
        return JSONResponse({"input_tokens": _estimate_tokens(record.body)})

    async def _messages(self, request: Request) -> Response:
        record = await self._new_record(request, "turn")
        self._record(record)
        body = record.body or {}
        try:
            step: Step = (
                Text(_side_text(body, self.side_reply))
                if record.kind == "side"
                else self._next_step(record)
            )
        except Exception as exc:
            # A broken step function, predicate or responder is a test bug: keep it for the
            # fixture to report, answer 500.
            log.exception("fake model: scripting failed")
            with self._cond:
                self.errors.append(exc)
            return JSONResponse(
                {"type": "error", "error": {"type": "api_error", "message": repr(exc)}},
                status_code=500,
            )

        delay_s, hang = step.delay_s, step.hang
        if delay_s:
            await asyncio.sleep(delay_s)  # a slow model, as the script asked
        if hang is not None:
            await hang.wait()

        if isinstance(step, ApiError):
            record.error = step
            if step.in_stream and body.get("stream"):
                return StreamingResponse(
                    self._error_stream(self._message(Text(""), body, record), step),
                    media_type="text/event-stream",
                    headers={"request-id": f"req_fake_{record.index}"},
                )
            return JSONResponse(
                {"type": "error", "error": {"type": step.error_type, "message": step.message}},
                status_code=step.status,
                headers={"request-id": f"req_fake_{record.index}", **step.headers},
            )

        message = self._message(step, body, record)
        record.reply = message
        if body.get("stream"):
            return StreamingResponse(
                self._stream(message),
                media_type="text/event-stream",
                headers={"request-id": f"req_fake_{record.index}", "cache-control": "no-cache"},
            )
        return JSONResponse(message, headers={"request-id": f"req_fake_{record.index}"})

    def _message(
        self, step: Text | ToolUse | Reply, body: Mapping[str, Any], record: RecordedRequest
    ) -> dict[str, Any]:
        blocks: tuple[Block, ...] = step.blocks if isinstance(step, Reply) else (step,)
        content: list[dict[str, Any]] = []
        for block in blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            else:
                tool_id = f"toolu_fake{next(self._ids):06d}"
                content.append(
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": block.name,
                        "input": dict(block.input),
                    }
                )
        stop_reason = step.stop_reason if isinstance(step, Reply) else None
        if stop_reason is None:
            stop_reason = (
                "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
            )
        output_tokens = max(1, len(json.dumps(content)) // 4)
        return {
            "id": f"msg_fake{record.index:06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": _estimate_tokens(body),
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    async def _stream(self, message: dict[str, Any]) -> AsyncIterator[bytes]:
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        yield _sse("message_start", {"type": "message_start", "message": start})
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                opening: dict[str, Any] = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                # The input arrives only as JSON deltas, as with the real API.
                opening = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": opening},
            )
            yield _sse(
                "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
            )
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})

    async def _error_stream(self, message: dict[str, Any], error: ApiError) -> AsyncIterator[bytes]:
        start = {**message, "content": [], "stop_reason": None}
        yield _sse("message_start", {"type": "message_start", "message": start})
        yield _sse(
            "error",
            {"type": "error", "error": {"type": error.error_type, "message": error.message}},
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("fake model not started")
        return self._base_url

    def start(self) -> FakeAnthropic:
        if self._thread is not None:
            raise RuntimeError("fake model already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        # Listening now means clients connect (into the backlog) before uvicorn's loop runs.
        sock.listen(128)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._base_url = f"http://{host}:{port}"
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            # A hung step that nobody released must not hold stop() for long.
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for gate in list(self._gates):
            gate.open()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("fake model: server thread did not stop within %ss", timeout)
        if self._sock is not None:
            self._sock.close()
        self._thread = None
        self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _side_text(body: Mapping[str, Any], text: str) -> str:
    """A side request's answer: the text, or JSON shaped to its schema if it asks for one.

    The session-title request sets ``output_config.format`` to a JSON schema ({"title": str});
    answer with every required property filled, strings with ``text``.
    """
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") != "json_schema":
        return text
    schema = fmt.get("schema") or {}
    props = schema.get("properties") or {}
    filler = {
        "string": text,
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "object": {},
    }
    answer = {
        name: filler.get(str((props.get(name) or {}).get("type")), text)
        for name in schema.get("required") or list(props)
    }
    return json.dumps(answer)


def _estimate_tokens(body: Mapping[str, Any] | None) -> int:
    return max(1, len(json.dumps(body or {})) // 4)
