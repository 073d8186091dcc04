"""tests/rig/polling.py: what the tests' waits rely on."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable

import pytest

from tests.rig.polling import eventually, eventually_sync


def answers(*values: object) -> tuple[list[object], Callable[[], object]]:
    """A check returning `values` in turn (the last one for ever), and the list of its calls."""
    calls: list[object] = []

    def check() -> object:
        value = values[min(len(calls), len(values) - 1)]
        calls.append(value)
        return value

    return calls, check


async def test_returns_the_first_truthy_value() -> None:
    calls, check = answers(None, 0, "", {"pid": 7}, "later")
    assert await eventually(check, timeout=5, interval=0.001, what="x") == {"pid": 7}
    assert calls == [None, 0, "", {"pid": 7}]


async def test_takes_an_async_check() -> None:
    calls, check = answers(False, False, 3)

    async def async_check() -> object:
        await asyncio.sleep(0)  # a check that really yields to the loop
        return check()

    assert await eventually(async_check, timeout=5, interval=0.001, what="x") == 3
    assert len(calls) == 3


async def test_takes_a_blocking_check_run_in_a_thread() -> None:
    here = threading.get_ident()
    found = await eventually(
        lambda: asyncio.to_thread(threading.get_ident), timeout=5, what="a thread"
    )
    assert found != here


async def test_times_out_naming_what_and_the_last_value() -> None:
    calls, check = answers(None, [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    message = re.escape("timed out after 0.2 s waiting for the rows; last seen: []")
    with pytest.raises(AssertionError, match=f"^{message}$"):
        await eventually(check, timeout=0.2, interval=0.01, what="the rows")
    assert loop.time() - started >= 0.2
    assert len(calls) > 2


async def test_what_can_be_made_at_the_timeout() -> None:
    seen: list[str] = []

    def check() -> bool:
        seen.append("look")
        return False

    with pytest.raises(AssertionError, match="waiting for ready after 3 looks; last seen: False"):
        await eventually(check, timeout=0, what=lambda: f"ready after {len(seen) + 2} looks")


async def test_looks_once_more_at_the_deadline() -> None:
    calls, check = answers("already")
    assert await eventually(check, timeout=0, what="x") == "already"
    calls, check = answers(None)
    with pytest.raises(AssertionError):
        await eventually(check, timeout=0, what="x")
    assert calls == [None]


async def test_the_checks_errors_are_not_swallowed() -> None:
    def broken() -> bool:
        raise KeyError("typo")

    with pytest.raises(KeyError, match="typo"):
        await eventually(broken, timeout=5, what="x")


def test_the_sync_twin_returns_the_value_or_times_out() -> None:
    calls, check = answers(None, None, 5)
    assert eventually_sync(check, timeout=5, interval=0.001, what="x") == 5
    assert len(calls) == 3

    calls, check = answers(0)
    started = time.monotonic()
    message = re.escape("timed out after 0.1 s waiting for five; last seen: 0")
    with pytest.raises(AssertionError, match=f"^{message}$"):
        eventually_sync(check, timeout=0.1, interval=0.01, what="five")
    assert time.monotonic() - started >= 0.1
    assert len(calls) > 2
