"""`hive up` and `hive c0re`: preflight, the embedded Temporal server, then hive-c0re."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any, TextIO

from control.runtime import CoreRuntime
from hive_c0re.c0re import run_c0re
from hyperhive.embedded_temporal import EmbeddedTemporal
from hyperhive.errors import StartupError
from hyperhive.preflight import StateLock, check_ports_free, ports_to_bind, prepare_dirs
from hyperhive.settings import HiveSettings
from hyperhive.store.db import StoreError

log = logging.getLogger(__name__)

READY_LINE = "hive-c0re is up"


def ready_banner(runtime: CoreRuntime) -> str:
    s = runtime.settings
    rows = [
        ("dashboard", s.dashboard_url()),
        ("health", f"{s.dashboard_url()}/health"),
        ("metrics", f"{s.dashboard_url()}/metrics"),
        ("hm1nd", f"http://{s.bind_host}:{s.manager_port}/"),
        ("admin", f"{s.host_socket_path} (the `hive` CLI: try `hive status`)"),
    ]
    if runtime.access_token is not None:
        # The banner goes to logs: it says where the token is, never the token.
        rows.insert(
            1,
            (
                "access",
                f"the pages ask for a token: open the links `hive urls` prints "
                f"(scripts: Authorization: Bearer, from {s.published_access_token_path})",
            ),
        )
    if s.embedded_temporal:
        rows += [
            ("temporal", f"{s.temporal_target} (embedded, history in {s.temporal_db_path})"),
            ("temporal ui", s.temporal_web_ui() or ""),
        ]
    else:
        rows.append(("temporal", f"{s.temporal_target} (namespace {s.temporal_namespace})"))
    rows += [
        ("backend", backend_line(runtime)),
        ("store", s.database_url),
        ("state dir", str(s.state_path)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [READY_LINE] + [f"  {name:<{width}}  {value}" for name, value in rows]
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def backend_line(runtime: CoreRuntime) -> str:
    """Where agents run and what their tools may do there: the one thing a new user must know."""
    mode = runtime.claude_defaults.mode
    if runtime.claude_defaults.sandboxed:
        return (
            f"{runtime.backend_name} (each agent in its own sandbox; its tools run without "
            f"prompts inside: {mode})"
        )
    if mode in ("bypassPermissions", "auto"):
        allowed = f"yet HIVE_PERMISSION_MODE={mode} lets their tools do anything hive-c0re can"
    else:
        allowed = f"so their claude may only edit files in their work dir ({mode}; no Bash)"
    return (
        f"{runtime.backend_name}: NO SANDBOX. Agents run as plain processes, {allowed}. "
        "Install bubblewrap for sandboxed agents with their full tools."
    )


def _install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve(settings: HiveSettings, *, with_temporal: bool, out: TextIO) -> None:
    """Run until SIGINT/SIGTERM. `with_temporal` starts the embedded server (`hive up`)."""
    prepare_dirs(settings)
    lock = StateLock(settings.state_path)
    lock.acquire()
    temporal: EmbeddedTemporal | None = None
    stop = asyncio.Event()
    _install_stop_handlers(stop)
    try:
        embedded = with_temporal and settings.embedded_temporal
        check_ports_free(settings.bind_host, ports_to_bind(settings, with_temporal=embedded))
        if embedded:
            temporal = EmbeddedTemporal(settings)
            await temporal.start()
        elif with_temporal:
            log.info(
                "HIVE_TEMPORAL_ADDRESS is set: using %s, no embedded server",
                settings.temporal_address,
            )

        async def announce(runtime: CoreRuntime) -> None:
            print(ready_banner(runtime), file=out, flush=True)

        core = asyncio.create_task(run_c0re(settings, stop, on_ready=announce), name="c0re")
        watchers: set[asyncio.Future[Any]] = {core}
        if temporal is not None:
            watchers.add(asyncio.create_task(temporal.wait_exit(), name="temporal"))
        done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        if core not in done:
            # Temporal went away under us: hive-c0re cannot do anything useful without it.
            assert temporal is not None
            stop.set()
            with contextlib.suppress(Exception):
                await core
            raise StartupError(
                f"the embedded Temporal server exited unexpectedly:\n{temporal.log_tail()}",
                f"see {temporal.log_path}; run `hive up` again",
            )
        core.result()
    finally:
        if temporal is not None:
            await temporal.stop()
        lock.release()


def run(settings: HiveSettings, *, with_temporal: bool) -> int:
    try:
        asyncio.run(serve(settings, with_temporal=with_temporal, out=sys.stdout))
    except (StartupError, StoreError) as exc:
        print(f"hive: {exc}", file=sys.stderr)
        return 2
    print("hive-c0re stopped.", flush=True)
    return 0
