"""The broker: store-backed messages between agents and the operator.

`send` writes the row, publishes on the in-process bus and, when no wake-up is outstanding for
the recipient, wakes its AgentWorkflow (coalesced: the DB flag `agents.wake_pending`).
`recv` pops the caller's oldest undelivered message atomically, long-polling on the bus.

Every refused call raises a `BrokerError` (with a machine-readable `code`) before anything is
stored. The store is the record: a wake-up that fails is logged and forgotten (the message
stays; the next send or `drain_pending` at start-up wakes the agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Engine

from hyperhive.bus import Bus
from hyperhive.domain import OPERATOR_NAME, SYSTEM_SENDER, AgentState, InvalidName, check_recipient
from hyperhive.errors import HiveError
from hyperhive.models import AgentInfo, Message, SendResult
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import messages as message_store
from hyperhive.turn_sends import TurnSends

if TYPE_CHECKING:
    from hyperhive.metrics import HiveMetrics

__all__ = [
    "MAX_STATUS_CHARS",
    "MESSAGES_TOPIC",
    "BodyTooLargeError",
    "Broker",
    "BrokerError",
    "EmptyBodyError",
    "InvalidBodyError",
    "InvalidNameError",
    "InvalidStatusError",
    "InvalidWaitError",
    "RateLimitedError",
    "UnknownAgentError",
    "Waker",
    "agent_events_topic",
    "inbox_topic",
]

log = logging.getLogger(__name__)

# A failed wake-up is retried after 1 s, then 2, 4, … up to every 30 s until it works.
WAKE_RETRY_FIRST_S = 1.0
WAKE_RETRY_MAX_S = 30.0

T = TypeVar("T")

# Wakes an agent's turn loop (a Temporal signal-with-start in hive-c0re). Called at most once per
# outstanding wake-up; raising means the wake-up was not delivered.
Waker = Callable[[str], Awaitable[None]]

MAX_STATUS_CHARS = 1000

MESSAGES_TOPIC = "messages"


def inbox_topic(agent: str) -> str:
    return f"inbox:{agent}"


def agent_events_topic(agent: str) -> str:
    return f"agent-events:{agent}"


# ---------------------------------------------------------------------------------------------
# errors


class BrokerError(HiveError):
    """A refused broker call: nothing was stored. `code` is machine-readable."""

    code = "broker_error"


class InvalidNameError(BrokerError):
    code = "invalid_name"


class UnknownAgentError(BrokerError):
    code = "unknown_agent"


class InvalidBodyError(BrokerError):
    """The body is not text the store can hold (not a str, NUL characters, lone surrogates)."""

    code = "invalid_body"


class EmptyBodyError(BrokerError):
    code = "empty_body"


class BodyTooLargeError(BrokerError):
    code = "body_too_large"


class RateLimitedError(BrokerError):
    code = "rate_limited"

    def __init__(self, what: str, hint: str = "", *, retry_after: float) -> None:
        super().__init__(what, hint)
        self.retry_after = retry_after


class InvalidWaitError(BrokerError):
    code = "invalid_wait"


class InvalidStatusError(BrokerError):
    code = "invalid_status"


# ---------------------------------------------------------------------------------------------
# rate limit


@dataclass
class _Bucket:
    """A token bucket: `capacity` tokens, refilled at `capacity` per minute."""

    capacity: float
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.capacity / 60.0)
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token; return 0, or the seconds until one is available (nothing taken)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.capacity

    def give_back(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1.0)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


# ---------------------------------------------------------------------------------------------
# the broker


class Broker:
    """Messages between agents and the operator, on top of the store, a bus and a waker.

    `recheck_interval_s`: a waiting `recv` also looks at the store this often, for messages that
    arrive without a bus event (a turn's message given back, a send from another process).
    `metrics`: counts every stored message by sender kind (`hive_messages_sent_total`).
    """

    def __init__(
        self,
        engine: Engine,
        bus: Bus,
        waker: Waker,
        settings: HiveSettings,
        *,
        recheck_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: HiveMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.settings = settings
        # The turn each agent is in (set by the turn activity), keying the sends made in it.
        self.turn_sends = TurnSends()
        self._waker = waker
        self._recheck_interval_s = recheck_interval_s
        self._clock = clock
        self._metrics = metrics
        self._buckets: dict[str, _Bucket] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # Agents whose wake-up failed, and the task retrying them (see _retry_wake_later).
        self._unwoken: set[str] = set()
        self._retrier: asyncio.Task[None] | None = None

    # -- public API ---------------------------------------------------------------------------

    async def send(
        self, sender: str, to: str, body: str, *, send_key: str | None = None
    ) -> SendResult:
        """Store a message from `sender` to `to` and wake `to` if needed.

        `send_key`: the call's key within a turn (`self.turn_sends`); a message stored under it
        already is returned as it is, not stored again.

        Raises BrokerError (nothing stored): invalid_name, unknown_agent, invalid_body,
        empty_body, body_too_large, rate_limited.
        """
        self._check_name(sender, "sender")
        self._check_name(to, "recipient")
        self._check_body(body)
        try:
            bucket = self._take_token(sender)
        except RateLimitedError:
            # A retried turn repeating a send it made is answered, whatever the rate: it sends
            # nothing new.
            stored = await self._stored_send(send_key)
            if stored is None:
                raise
            return stored
        # Shielded: once the row may be written, a cancelled caller must not leave the wake-up
        # flag set without a wake-up (the agent would sleep on its messages until a restart).
        return await asyncio.shield(
            self._spawn(self._store_and_wake(sender, to, body, bucket, send_key))
        )

    async def _stored_send(self, send_key: str | None) -> SendResult | None:
        if send_key is None:
            return None
        found = await asyncio.to_thread(message_store.sent_with_key, self.engine, send_key)
        if found is None:
            return None
        message, pending = found
        return SendResult(id=message.id, recipient=message.recipient, pending=pending)

    async def notify_operator(self, agent: str, body: str) -> SendResult:
        """hive-c0re's own notice to the operator about `agent` (paused, over budget, needs a
        login, …): stored as a message from hive-c0re to the operator (the agent did not write
        it). Unlike `send` it is exempt
        from the agent's rate limit, and a body over the limit is cut rather than refused (the
        notice must get through). Raises UnknownAgentError / InvalidNameError / EmptyBodyError.
        """
        self._check_name(agent, "agent")
        await self._require_known(agent)
        return await self._notice(SYSTEM_SENDER, OPERATOR_NAME, body)

    async def system_notice(self, to: str, body: str) -> SendResult:
        """A notice from hive-c0re itself (sender `hive-c0re`) to an agent or the operator: an
        approval to decide, a spawn done, a commit deployed. Exempt from rate limits like
        `notify_operator`."""
        self._check_name(to, "recipient")
        return await self._notice(SYSTEM_SENDER, to, body)

    async def _notice(self, sender: str, to: str, body: str) -> SendResult:
        if not isinstance(body, str) or not body.strip():
            raise EmptyBodyError("the notice is empty", "Say what happened.")
        text = body.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
        limit = self.settings.max_body_bytes
        if len(text.encode("utf-8")) > limit:
            marker = " … (cut)"
            room = max(0, limit - len(marker.encode("utf-8")))
            text = text.encode("utf-8")[:room].decode("utf-8", "ignore") + marker
        return await asyncio.shield(self._spawn(self._store_and_wake(sender, to, text, None)))

    async def recv(self, agent: str, wait_seconds: float = 0) -> Message | None:
        """Pop `agent`'s oldest undelivered message; wait up to `wait_seconds` for one.

        Raises BrokerError: invalid_wait, invalid_name, unknown_agent.
        """
        wait = self._check_wait(wait_seconds)
        self._check_name(agent, "agent")
        await self._require_known(agent)
        message = await self._pop(agent)
        if message is not None or wait == 0:
            return message
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # Subscribe first, then look: a message stored after the subscription exists is seen by
        # the look or leaves an event in the subscription, so no wake-up is lost in between.
        with self.bus.subscribe(inbox_topic(agent), maxsize=1) as inbox:
            while True:
                message = await self._pop(agent)
                if message is not None:
                    return message
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await inbox.wait(min(remaining, self._recheck_interval_s))

    async def whoami(self, agent: str) -> AgentInfo:
        self._check_name(agent, "agent")
        if agent == OPERATOR_NAME:
            pending = await asyncio.to_thread(message_store.pending_count, self.engine, agent)
            return AgentInfo(name=OPERATOR_NAME, state=AgentState.IDLE.value, pending=pending)
        info = await asyncio.to_thread(agent_store.get_agent, self.engine, agent)
        if info is None:
            raise self._unknown(agent, "agent")
        return info

    async def set_status(self, agent: str, text: str) -> None:
        """Set the agent's one-line status (shown on the dashboard)."""
        self._check_name(agent, "agent")
        if agent == OPERATOR_NAME:
            raise InvalidNameError(
                "the operator has no status line",
                "set_status is for agents; the operator's state shows on the dashboard.",
            )
        if not isinstance(text, str):
            raise InvalidStatusError(
                f"the status must be text, got {type(text).__name__}", "Pass a short string."
            )
        if len(text) > MAX_STATUS_CHARS:
            raise InvalidStatusError(
                f"the status is {len(text)} characters long; at most {MAX_STATUS_CHARS} are "
                "allowed",
                "Keep the status to one short line; send longer reports as a message.",
            )
        if "\x00" in text:
            raise InvalidStatusError(
                "the status contains a NUL character", "Remove the NUL (\\x00) characters."
            )
        try:
            await asyncio.to_thread(agent_store.set_status_text, self.engine, agent, text)
        except agent_store.NoSuchAgent:
            raise self._unknown(agent, "agent") from None
        self.bus.publish(
            agent_events_topic(agent), {"kind": "status", "agent": agent, "status_text": text}
        )

    async def recent_messages(self, agent: str | None = None, limit: int = 100) -> list[Message]:
        """The newest messages first (not consuming anything), all or those from/to `agent`."""
        return await asyncio.to_thread(
            message_store.recent_messages, self.engine, agent=agent, limit=limit
        )

    async def drain_pending(self) -> list[str]:
        """Wake every agent (not stopped) that has undelivered messages; return their names.

        For start-up: wake-ups outstanding before a restart may have been lost, so the flag is
        not consulted. A failed wake-up is logged and retried in the background.
        """
        names = await asyncio.to_thread(message_store.agents_with_pending, self.engine)
        for name in names:
            await self._wake(name)
        return names

    async def aclose(self) -> None:
        """Wait for wake-ups still in flight (of sends that were cancelled); stop retrying failed
        ones (the next start-up's drain wakes those agents)."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        while self._background:
            await asyncio.gather(*tuple(self._background), return_exceptions=True)

    # -- validation ---------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str, role: str) -> None:
        if not isinstance(name, str):
            raise InvalidNameError(
                f"the {role} must be a name, got {type(name).__name__}",
                f"Pass an agent name (1-9 characters a-z, 0-9, '-') or {OPERATOR_NAME!r}.",
            )
        try:
            check_recipient(name)
        except InvalidName as e:
            raise InvalidNameError(
                f"invalid {role}: {e}",
                f"Use the name of a registered agent, or {OPERATOR_NAME!r} for the human operator.",
            ) from None

    def _check_body(self, body: str) -> None:
        if not isinstance(body, str):
            raise InvalidBodyError(
                f"the message body must be text, got {type(body).__name__}",
                "Send the body as a string (serialise structured data, e.g. as JSON).",
            )
        try:
            size = len(body.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise InvalidBodyError(
                f"the message body is not valid Unicode text ({e.reason} at position {e.start})",
                "Remove the unpaired surrogate characters from the body.",
            ) from None
        limit = self.settings.max_body_bytes
        if size > limit:
            raise BodyTooLargeError(
                f"the message body is {size} bytes (UTF-8); the limit is {limit} bytes",
                "Shorten it, or put the content in a file in your work directory and send its "
                "path (the operator can raise HIVE_MAX_BODY_BYTES).",
            )
        if not body.strip():
            raise EmptyBodyError(
                "the message body is empty", "Write something in the body before sending."
            )
        if "\x00" in body:
            raise InvalidBodyError(
                "the message body contains a NUL character, which the store cannot hold",
                "Remove the NUL (\\x00) characters, or encode binary data (e.g. base64).",
            )

    def _check_wait(self, wait_seconds: float) -> float:
        limit = self.settings.recv_max_wait_s
        ok = isinstance(wait_seconds, int | float) and not isinstance(wait_seconds, bool)
        if not ok or not math.isfinite(wait_seconds) or not 0 <= wait_seconds <= limit:
            raise InvalidWaitError(
                f"wait_seconds must be a number from 0 to {limit:g}, got {wait_seconds!r}",
                f"Use 0 to return at once, or up to {limit:g} seconds to wait for a message "
                "(HIVE_RECV_MAX_WAIT_S).",
            )
        return float(wait_seconds)

    def _unknown(self, name: str, role: str) -> UnknownAgentError:
        return UnknownAgentError(
            f"the {role} {name!r} is not a registered agent",
            f"Check the name (list_agents shows the agents); {OPERATOR_NAME!r} reaches the human "
            "operator.",
        )

    async def _require_known(self, agent: str) -> None:
        if agent == OPERATOR_NAME:
            return
        info = await asyncio.to_thread(agent_store.get_agent, self.engine, agent)
        if info is None:
            raise self._unknown(agent, "agent")

    # -- rate limit ---------------------------------------------------------------------------

    def _take_token(self, sender: str) -> _Bucket | None:
        if sender == OPERATOR_NAME:
            return None
        rate = self.settings.send_rate_per_minute
        now = self._clock()
        bucket = self._buckets.get(sender)
        if bucket is None or bucket.capacity != rate:
            bucket = self._buckets[sender] = _Bucket(capacity=rate, tokens=rate, updated=now)
        retry_after = bucket.take(now)
        if retry_after > 0:
            raise RateLimitedError(
                f"{sender} is sending too fast: the limit is {rate} messages per minute",
                f"Wait {math.ceil(retry_after)} s before sending again, and put more into each "
                "message (the operator can raise HIVE_SEND_RATE_PER_MINUTE).",
                retry_after=retry_after,
            )
        return bucket

    def _give_back_token(self, sender: str, bucket: _Bucket | None, *, forget: bool) -> None:
        if bucket is None:
            return
        bucket.give_back()
        if forget or bucket.full(self._clock()):
            self._buckets.pop(sender, None)  # keep no state for unknown or idle senders

    # -- store and wake-ups -------------------------------------------------------------------

    async def _store_and_wake(
        self,
        sender: str,
        to: str,
        body: str,
        bucket: _Bucket | None,
        send_key: str | None = None,
    ) -> SendResult:
        try:
            message, wake, pending, repeated = await asyncio.to_thread(
                functools.partial(
                    message_store.insert_message_counted,
                    self.engine,
                    sender,
                    to,
                    body,
                    send_key=send_key,
                )
            )
        except agent_store.NoSuchAgent as e:
            self._give_back_token(sender, bucket, forget=e.name == sender)
            raise self._unknown(e.name, "sender" if e.name == sender else "recipient") from None
        except BaseException:
            self._give_back_token(sender, bucket, forget=False)
            raise
        if repeated:
            # The same call of an earlier attempt of this turn stored it: that one counted, woke
            # and was published.
            self._give_back_token(sender, bucket, forget=False)
            log.info(
                "%s's retried turn sent #%d to %s again: the stored message is returned, "
                "not sent twice",
                sender,
                message.id,
                message.recipient,
            )
            return SendResult(id=message.id, recipient=message.recipient, pending=pending)
        if self._metrics is not None:
            self._metrics.message_sent(sender)
        event = message.model_dump(mode="json")
        self.bus.publish(inbox_topic(to), event)
        self.bus.publish(MESSAGES_TOPIC, event)
        if wake:
            await self._wake(to)
        return SendResult(id=message.id, recipient=to, pending=pending)

    async def _wake(self, agent: str) -> None:
        try:
            await self._waker(agent)
        except Exception:
            log.warning(
                "could not wake agent %s (is Temporal reachable?); its messages stay stored and "
                "hive-c0re keeps trying",
                agent,
                exc_info=True,
            )
            try:
                await asyncio.to_thread(message_store.clear_wake, self.engine, agent)
            except Exception:
                log.exception("could not clear the wake-up flag of agent %s", agent)
            self._retry_wake_later(agent)

    def _retry_wake_later(self, agent: str) -> None:
        """Without this, a message sent while Temporal was down waited for the next send to the
        same agent (or a restart): nothing else would wake the agent once Temporal was back."""
        self._unwoken.add(agent)
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.ensure_future(self._retry_wakes())

    async def _retry_wakes(self) -> None:
        delay = WAKE_RETRY_FIRST_S
        while self._unwoken:
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAKE_RETRY_MAX_S)
            for agent in sorted(self._unwoken):
                try:
                    await self._waker(agent)
                except Exception as e:
                    log.info(
                        "agent %s still cannot be woken (%s); retrying in %.0f s", agent, e, delay
                    )
                    break  # the same outage: wait before trying the others
                self._unwoken.discard(agent)
                log.info("woke agent %s after an earlier failure", agent)

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        # Mark the exception retrieved: the caller got it, or was cancelled and does not care
        # (the store stays consistent either way).
        if not task.cancelled() and task.exception() is not None:
            log.debug("broker task ended with an error", exc_info=task.exception())

    async def _pop(self, agent: str) -> Message | None:
        """pop_message, safe to cancel: a message popped for a cancelled caller is put back."""
        popping = self._spawn(asyncio.to_thread(message_store.pop_message, self.engine, agent))
        try:
            return await asyncio.shield(popping)
        except asyncio.CancelledError:
            popping.add_done_callback(self._put_back_if_popped)
            raise

    def _put_back_if_popped(self, popping: asyncio.Task[Message | None]) -> None:
        if popping.cancelled() or popping.exception() is not None:
            return
        message = popping.result()
        if message is not None:
            self._spawn(self._give_back(message))

    async def _give_back(self, message: Message) -> None:
        try:
            await asyncio.to_thread(message_store.undeliver_message, self.engine, message.id)
        except Exception:
            log.exception(
                "message %d to %s was popped for a cancelled recv and could not be put back",
                message.id,
                message.recipient,
            )
            return
        self.bus.publish(inbox_topic(message.recipient), message.model_dump(mode="json"))
