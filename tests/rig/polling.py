"""Waiting for a condition nothing announces: look again and again, up to a deadline.

For what only a status query, the store, /proc or a child's output can tell. Where the code
under test exposes an event (an asyncio.Event, a bus subscription, a Condition), await that
instead: it is quicker and cannot miss a state that comes and goes between two looks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

# What is awaited, for the timeout's message: a phrase, or a function that makes one at the
# timeout, so that the message can tell what the test saw last.
What = str | Callable[[], str]


def _timed_out(what: What, timeout: float, last: object) -> AssertionError:
    said = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:g} s waiting for {said}; last seen: {last!r}")


# `T | None`: a None while the check waits is never what comes back, so callers get a T.
@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: What, interval: float = ...
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], *, timeout: float, what: What, interval: float = ...
) -> T: ...


async def eventually(
    check: Callable[[], Any], *, timeout: float, what: What, interval: float = 0.05
) -> Any:
    """Call `check` every `interval` s until it returns something truthy, and return that.

    `check` may be sync or async; a sync one that blocks (it reads the store or /proc) goes as
    `lambda: asyncio.to_thread(f)`. It runs once more at the deadline, so a condition met just
    in time counts. Its exceptions are not caught. A check that hangs is not cut off at the
    deadline (pytest's timeout reports it). Raises AssertionError naming `what` and the last
    value `check` returned.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        left = deadline - loop.time()
        if left <= 0:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(min(interval, left))


def eventually_sync(
    check: Callable[[], T | None], *, timeout: float, what: What, interval: float = 0.05
) -> T:
    """`eventually` for a sync test or a thread: it blocks between the looks."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(what, timeout, last)
        time.sleep(min(interval, left))
