"""The dashboard's live stream, `GET /api/stream/messages` (SSE); api/dashboard.py lists its
events.

The agent and approval rows are rendered once for all open streams (`SharedRows`): pending
approvals carry their diffs (up to 128 KiB each), so a rendering per stream made every open tab
cost a copy of them and a query and a render every `REFRESH_S` — 50 tabs took hive-c0re to
1.5 GB and its `/health` to 9 s. A stream keeps only the version numbers it last sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.dashboard import (
    down_count,
    pending_count,
    render_agent_rows,
    render_approval_rows,
    render_host_rows,
)
from api.deps import Operator, Runtime, Slots
from api.sse import RETRY_MS, Event, Feed, Next, live_stream
from control.operator import AgentView, ApprovalView, OperatorService
from hyperhive.broker import MESSAGES_TOPIC
from hyperhive.domain import MAX_STORE_ID, parse_resume_id
from hyperhive.models import Message

router = APIRouter(tags=["dashboard"])

# How often an open stream looks for changed agent/approval rows without a message to wake it.
REFRESH_S = 2.0
# A first connect (no Last-Event-ID, no ?after=) starts with this many recent messages.
REPLAY_RECENT = 100
BATCH = 200


@dataclass(frozen=True)
class Rows:
    """One rendering of the rows as encoded SSE events, sent as they are by every stream (no
    per-stream copy); a version goes up when its rows changed."""

    agents: bytes
    agents_version: int
    approvals: bytes
    approvals_version: int
    # Re-rendered every time (a few short rows): their heartbeats change every few seconds.
    hosts: bytes
    hosts_version: int
    # The newest message id the rendering has seen, and when it was taken.
    message_id: int
    taken_at: float
    # What was rendered: the same rows again are not rendered again (approvals carry diffs).
    agents_in: list[AgentView]
    approvals_in: list[ApprovalView]


class SharedRows:
    """The rows every open stream sends, rendered at most once per message or per `max_age_s`
    whoever asks: N streams cost one query and one copy, not N."""

    def __init__(self, operator: OperatorService, max_age_s: float) -> None:
        self._operator = operator
        self._max_age_s = max_age_s
        self._lock = asyncio.Lock()
        self._rows: Rows | None = None

    def _fresh(self, message_id: int) -> Rows | None:
        rows = self._rows
        if rows is None or rows.message_id < message_id:
            return None  # a message (e.g. "bob is up") may mean the rows changed
        return rows if time.monotonic() - rows.taken_at < self._max_age_s else None

    async def current(self, message_id: int) -> Rows:
        """The rows as of at least `message_id` (the newest message the asking stream sent)."""
        if (rows := self._fresh(message_id)) is not None:
            return rows
        async with self._lock:
            if (rows := self._fresh(message_id)) is not None:
                return rows  # another stream rendered while this one waited
            self._rows = await self._render(message_id)
            return self._rows

    async def _render(self, message_id: int) -> Rows:
        taken_at = time.monotonic()
        hosts = await self._operator.hosts()
        agents = await self._operator.agents(hosts=hosts)
        approvals = await self._operator.approvals()
        old = self._rows
        if old is not None and agents == old.agents_in:
            agents_data, agents_version = old.agents, old.agents_version
        else:
            agents_data = _event(
                "agents", {"count": len(agents), "html": render_agent_rows(agents)}
            )
            agents_version = _version(old.agents, old.agents_version, agents_data) if old else 1
        if old is not None and approvals == old.approvals_in:
            approvals_data, approvals_version = old.approvals, old.approvals_version
        else:
            approvals_data = _event(
                "approvals",
                {"pending": pending_count(approvals), "html": render_approval_rows(approvals)},
            )
            approvals_version = (
                _version(old.approvals, old.approvals_version, approvals_data) if old else 1
            )
        hosts_data = _event("hosts", {"down": down_count(hosts), "html": render_host_rows(hosts)})
        return Rows(
            agents=agents_data,
            agents_version=agents_version,
            approvals=approvals_data,
            approvals_version=approvals_version,
            hosts=hosts_data,
            hosts_version=_version(old.hosts, old.hosts_version, hosts_data) if old else 1,
            message_id=max(message_id, old.message_id if old else 0),
            taken_at=taken_at,
            agents_in=agents,
            approvals_in=approvals,
        )


def _event(kind: str, data: dict[str, object]) -> bytes:
    return ServerSentEvent(data=json.dumps(data), event=kind).encode()


def _version(old: bytes, old_version: int, new: bytes) -> int:
    return old_version if old == new else old_version + 1


async def shared_rows(request: Request, operator: Operator) -> SharedRows:
    """The app's one SharedRows, made by the first stream."""
    state = request.app.state
    rows: SharedRows | None = getattr(state, "shared_rows", None)
    if rows is None:
        rows = state.shared_rows = SharedRows(operator, REFRESH_S / 2)
    return rows


SharedRowsOfApp = Annotated[SharedRows, Depends(shared_rows)]


class _RowWatch:
    """What one stream has sent of the shared rows: three version numbers."""

    def __init__(self, shared: SharedRows) -> None:
        self._shared = shared
        self._agents = 0
        self._approvals = 0
        self._hosts = 0

    async def changed(self, message_id: int) -> list[bytes]:
        rows = await self._shared.current(message_id)
        events = []
        if rows.agents_version != self._agents:
            self._agents = rows.agents_version
            events.append(rows.agents)
        if rows.approvals_version != self._approvals:
            self._approvals = rows.approvals_version
            events.append(rows.approvals)
        if rows.hosts_version != self._hosts:
            self._hosts = rows.hosts_version
            events.append(rows.hosts)
        return events


def _message_event(message: Message) -> ServerSentEvent:
    return ServerSentEvent(data=message.model_dump_json(), id=str(message.id), event="message")


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """Where the stream starts: after the browser's Last-Event-ID (a reconnect), else after
    `?after=`; None = with the most recent messages."""
    resume = parse_resume_id(last_event_id)
    return resume if resume is not None else after


class MessageFeed(Feed):
    """The stored messages after `after` (None: the most recent ones), then the rows whenever
    they changed."""

    def __init__(self, operator: OperatorService, shared: SharedRows, after: int | None) -> None:
        super().__init__(MESSAGES_TOPIC, wake_buffer=1, poll_s=REFRESH_S)
        self._operator = operator
        self._rows = _RowWatch(shared)
        self._resume_after = after
        self._last = 0
        self._batch: list[Message] | None = None

    async def opening(self) -> AsyncIterator[Event]:
        if self._resume_after is None:
            self._batch = list(reversed(await self._operator.messages(limit=REPLAY_RECENT)))
            self._last = self._batch[0].id - 1 if self._batch else 0
        else:
            self._batch = await self._operator.messages(after_id=self._resume_after, limit=BATCH)
            self._last = self._resume_after
        # Its id is where a reconnect resumes if the stream breaks before the first message.
        yield ServerSentEvent(data="{}", id=str(self._last), event="ready", retry=RETRY_MS)

    async def news(self) -> AsyncIterator[Event]:
        batch, self._batch = self._batch, None
        if batch is None:
            batch = await self._operator.messages(after_id=self._last, limit=BATCH)
        for message in batch:
            yield _message_event(message)
            self._last = message.id
        for event in await self._rows.changed(self._last):
            yield event
        self.next_step = Next.AGAIN if len(batch) >= BATCH else Next.WAIT


@router.get("/api/stream/messages", response_model=None)
async def stream_messages(
    request: Request,
    runtime: Runtime,
    operator: Operator,
    slots: Slots,
    rows: SharedRowsOfApp,
    after: Annotated[int | None, Query(ge=0, le=MAX_STORE_ID)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The live message flow (SSE), resumable with Last-Event-ID; also pushes the agent,
    approval and host rows when they change."""
    feed = MessageFeed(operator, rows, _resume_point(last_event_id, after))
    return live_stream(request, runtime, slots, feed)
