"""Store calls from async code: each runs in a worker thread, so a slow disk or a locked SQLite
never stalls the event loop that serves agents and pages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine

P = ParamSpec("P")
R = TypeVar("R")


class StoreCalls:
    """`await calls(store_fn, *args)` runs `store_fn(engine, *args)` in a thread; the type
    checker sees each store function's own parameters and result."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def __call__(
        self, fn: Callable[Concatenate[Engine, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await asyncio.to_thread(fn, self._engine, *args, **kwargs)
