"""The event bus across hosts: PostgreSQL LISTEN/NOTIFY behind the `Bus` interface.

Several hive-c0re processes (one per host) that share one PostgreSQL store hear each other's
events. `PgBus` wraps an in-process `EventBus`: `publish` delivers the full event to the local
subscribers at once, as `EventBus` does, and queues a NOTIFY on one channel (`hive_bus`) for the
other processes. The NOTIFY carries a small JSON document: the publishing bus's origin id, the
topic and the event's id-like fields (`ID_KEYS`), never a body. A listener re-publishes the
other processes' notifications locally as `{<id fields>, "remote": True}`; its own (already
delivered) are ignored.

Consumers use the bus only as a wake-up and read the store, so a lost notification may delay a
consumer but must not leave it asleep: after the listening connection comes back, every topic
with subscribers gets `{"kind": "resync"}` (notifications sent meanwhile are lost), and after the
publishing connection comes back, one NOTIFY on the wildcard topic `*` makes every other process
do the same (the NOTIFYs queued meanwhile were dropped, or may have been).

Use `async with PgBus(url) as bus:` or the pair `await bus.start()` / `await bus.aclose()`.
psycopg (the `postgres` extra) is imported only when the bus starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hyperhive.bus import DEFAULT_QUEUE_SIZE, EventBus, Subscription
from hyperhive.errors import StartupError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = [
    "CHANNEL",
    "ID_KEYS",
    "MAX_PAYLOAD_BYTES",
    "RESYNC",
    "WILDCARD",
    "PgBus",
    "notify_payload",
]

log = logging.getLogger(__name__)

Event = dict[str, Any]

CHANNEL = "hive_bus"
# The topic of a NOTIFY that makes every listener resync all its subscribed topics.
WILDCARD = "*"
RESYNC: Event = {"kind": "resync"}
# The fields of an event a NOTIFY carries: ids a consumer may use to look in the store.
ID_KEYS = ("id", "turn_id", "seq", "kind", "agent", "recipient", "sender", "message_id")
# PostgreSQL refuses payloads of 8000 bytes or more; a wake-up needs far less.
MAX_PAYLOAD_BYTES = 1000
_MAX_FIELD_CHARS = 200
# NOTIFYs waiting for the publishing connection; past this the oldest go and a resync covers them.
OUTBOX_SIZE = 10_000
_CHANNEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRANSIENT = (OSError, TimeoutError)


def notify_payload(origin: str, topic: str, event: Event) -> str:
    """The NOTIFY text for `event`: origin, topic and the event's short scalar id fields, at most
    MAX_PAYLOAD_BYTES (fields are dropped to fit; a topic too long to fit becomes WILDCARD)."""
    fields = {
        key: value
        for key in ID_KEYS
        if isinstance(value := event.get(key), str | int | float | bool)
        and not (isinstance(value, str) and len(value) > _MAX_FIELD_CHARS)
    }
    while True:
        text = json.dumps(
            {"origin": origin, "topic": topic, "event": fields}, separators=(",", ":")
        )
        if len(text.encode()) <= MAX_PAYLOAD_BYTES:
            return text
        if not fields:
            return notify_payload(origin, WILDCARD, {})
        fields.popitem()


class PgBus:
    """A `Bus` shared by the processes LISTENing on `channel` of the PostgreSQL at `database_url`
    (a SQLAlchemy URL such as postgresql+psycopg://hive@db/hive). `publish` works from any thread
    and never blocks; `subscribe` from the event loop that `start` ran on."""

    def __init__(
        self,
        database_url: str,
        *,
        channel: str = CHANNEL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        retry_min_s: float = 0.1,
        retry_max_s: float = 2.0,
        ping_s: float = 30.0,
    ) -> None:
        if not _CHANNEL_NAME.match(channel):
            raise ValueError(f"channel must be a lower-case SQL identifier, got {channel!r}")
        try:
            url = make_url(database_url)
        except ArgumentError:
            raise StartupError(
                "the database URL for the event bus is not a valid URL",
                "set HIVE_DB_URL to postgresql+psycopg://user:password@host:port/dbname",
            ) from None
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._password = url.password if isinstance(url.password, str) else None
        self._url_options = set(url.query)
        self.shown_url = url.render_as_string(hide_password=True)
        self.origin = uuid.uuid4().hex
        self.local = EventBus(queue_size=queue_size)
        self._channel = channel
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._ping_s = ping_s
        # The outbox is shared with publishing threads; `_ready` wakes the publisher task.
        self._lock = threading.Lock()
        self._outbox: deque[str] = deque()
        self._lost = False  # NOTIFYs were dropped: the next thing sent is the wildcard
        self._signalled = False
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._listener: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self.reconnects = 0

    # -- the Bus interface -------------------------------------------------------------------

    def publish(self, topic: str, event: Event) -> None:
        self.local.publish(topic, event)
        if self._closing:
            return
        payload = notify_payload(self.origin, topic, event)
        with self._lock:
            if len(self._outbox) >= OUTBOX_SIZE:
                self._outbox.popleft()
                self._lost = True
            self._outbox.append(payload)
            loop = self._loop
            if loop is None or self._signalled:
                return  # not started (start sends it), or the publisher is woken already
            self._signalled = True
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._ready.set()
            return
        with contextlib.suppress(RuntimeError):  # its loop is closed: the bus is gone
            loop.call_soon_threadsafe(self._ready.set)

    def subscribe(self, topic: str, *, maxsize: int | None = None) -> Subscription:
        return self.local.subscribe(topic, maxsize=maxsize)

    async def wait(self, topic: str, timeout: float | None) -> bool:  # noqa: ASYNC109
        return await self.local.wait(topic, timeout)

    def subscriber_count(self, topic: str) -> int:
        return self.local.subscriber_count(topic)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (LISTEN, and the publishing connection) and start both tasks.

        Raises StartupError when PostgreSQL cannot be reached or psycopg is missing."""
        if self._loop is not None:
            raise RuntimeError("this PgBus was started already")
        try:
            import psycopg
        except ImportError:
            raise StartupError(
                "the PostgreSQL event bus needs the psycopg driver, which is not installed",
                "install it: pip install 'psycopg[binary]' (the hyperhive[postgres] extra)",
            ) from None
        try:
            listening = await self._connect(listen=True)
            try:
                publishing = await self._connect(listen=False)
            except BaseException:
                await listening.close()
                raise
        except (psycopg.Error, *_TRANSIENT) as exc:
            raise StartupError(
                f"the event bus cannot connect to PostgreSQL at {self.shown_url}: {self._why(exc)}",
                "start PostgreSQL or make it reachable from this host, and check HIVE_DB_URL "
                "(host, port, user, password, database)",
            ) from None
        self._loop = asyncio.get_running_loop()
        with self._lock:
            if self._outbox:  # published before start
                self._signalled = True
                self._ready.set()
        self._listener = asyncio.create_task(
            self._listen_forever(listening), name="event bus: listen"
        )
        self._publisher = asyncio.create_task(
            self._publish_forever(publishing), name="event bus: notify"
        )
        for task in (self._listener, self._publisher):
            task.add_done_callback(self._report_failure)

    async def aclose(self) -> None:
        """Send what is queued (for up to a second), then stop both tasks and connections."""
        self._closing = True
        if self._listener is None or self._publisher is None:
            return
        self._ready.set()
        await asyncio.wait({self._publisher}, timeout=1.0)  # it ends once its outbox is sent
        tasks = (self._listener, self._publisher)
        for task in tasks:
            task.cancel()
        # A task that failed was reported when it ended: shutting down goes on.
        await asyncio.gather(*tasks, return_exceptions=True)

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "event bus: %r failed; this hive-c0re hears the other hosts' events only through "
            "its periodic store rechecks until it restarts",
            task.get_name(),
            exc_info=task.exception(),
        )

    async def __aenter__(self) -> PgBus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- connections -------------------------------------------------------------------------

    async def _connect(self, *, listen: bool) -> AsyncConnection[Any]:
        import psycopg
        from psycopg import sql

        role = "listen" if listen else "notify"
        options: dict[str, Any] = {"application_name": f"hive-bus-{role}-{self.origin[:8]}"}
        # A host that vanishes without closing the socket is noticed by keepalives and pings.
        defaults = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10}
        options |= {k: v for k, v in defaults.items() if k not in self._url_options}
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **options)
        try:
            if listen:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _reconnect(
        self, role: str, exc: BaseException, *, listen: bool
    ) -> AsyncConnection[Any]:
        """A new connection after `exc` broke one: one warning, then retries with backoff."""
        import psycopg

        log.warning(
            "event bus: the %s connection to PostgreSQL at %s broke (%s); reconnecting — "
            "the other hosts' events are late until then",
            role,
            self.shown_url,
            self._why(exc),
        )
        lost_at = time.monotonic()
        delay = self._retry_min_s
        while True:
            await asyncio.sleep(delay)  # backoff: nothing announces that the server is back
            try:
                conn = await self._connect(listen=listen)
            except (psycopg.Error, *_TRANSIENT):
                delay = min(delay * 2, self._retry_max_s)
                continue
            self.reconnects += 1
            log.info(
                "event bus: the %s connection to PostgreSQL is back after %.1f s",
                role,
                time.monotonic() - lost_at,
            )
            return conn

    def _why(self, exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if self._password:
            text = text.replace(self._password, "***")
        return text

    # -- listening ---------------------------------------------------------------------------

    async def _listen_forever(self, conn: AsyncConnection[Any]) -> None:
        import psycopg

        try:
            while True:
                try:
                    await self._listen(conn)
                except (psycopg.Error, *_TRANSIENT) as exc:
                    with contextlib.suppress(psycopg.Error, *_TRANSIENT):
                        await conn.close()
                    conn = await self._reconnect("listening", exc, listen=True)
                    # Whatever was notified while we were not listening is lost: every waiting
                    # consumer looks at the store again.
                    self._resync_local()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _listen(self, conn: AsyncConnection[Any]) -> None:
        while True:
            async with contextlib.aclosing(conn.notifies(timeout=self._ping_s)) as notifies:
                async for notify in notifies:
                    self._deliver(notify.payload)
            # Quiet for ping_s: a dead peer shows up in a query, not in waiting for notifies.
            async with asyncio.timeout(self._ping_s):
                await conn.execute("SELECT 1")

    def _deliver(self, payload: str) -> None:
        try:
            doc = json.loads(payload)
            origin, topic, fields = doc["origin"], doc["topic"], doc["event"]
        except (ValueError, KeyError, TypeError):
            log.debug("event bus: ignored a malformed notification %r", payload[:200])
            return
        if origin == self.origin or not isinstance(topic, str) or not isinstance(fields, dict):
            return  # our own: delivered locally when published
        if topic == WILDCARD:
            self._resync_local()
            return
        self.local.publish(topic, {**fields, "remote": True})

    def _resync_local(self) -> None:
        for topic in self.local.active_topics():
            self.local.publish(topic, dict(RESYNC))

    # -- publishing --------------------------------------------------------------------------

    async def _publish_forever(self, conn: AsyncConnection[Any]) -> None:
        import psycopg

        try:
            while True:
                try:
                    await self._send_outbox(conn)
                    return  # closing, and everything is sent
                except (psycopg.Error, *_TRANSIENT) as exc:
                    with contextlib.suppress(psycopg.Error, *_TRANSIENT):
                        await conn.close()
                    conn = await self._reconnect("publishing", exc, listen=False)
                    # What failed, and what was published while down, is dropped: one wildcard
                    # NOTIFY makes every listener look at the store again instead.
                    with self._lock:
                        self._outbox.clear()
                        self._lost = True
                    self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _send_outbox(self, conn: AsyncConnection[Any]) -> None:
        query = "SELECT pg_notify(%s, %s)"
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), self._ping_s)
            except TimeoutError:
                # Idle: find a broken connection now, not at the next publish.
                async with asyncio.timeout(self._ping_s):
                    await conn.execute("SELECT 1")
                continue
            with self._lock:
                self._ready.clear()
                self._signalled = False
                batch = list(self._outbox)
                self._outbox.clear()
                lost, self._lost = self._lost, False
            if lost:
                batch.insert(0, notify_payload(self.origin, WILDCARD, {}))
            if batch:
                # One statement (and transaction) each, in publish order, pipelined.
                async with conn.cursor() as cursor:
                    await cursor.executemany(query, [(self._channel, p) for p in batch])
            if self._closing and not self._outbox:
                return
