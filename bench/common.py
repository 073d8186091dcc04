"""Shared bits of the benchmarks: result rows, percentiles, the machine line, a fake claude."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment

    from tests.rig.hive_process import HiveEnv

PYTHON = ".venv/bin/python"


@dataclass
class Row:
    """One line of the results table in docs/BENCHMARKS.md."""

    what: str
    command: str
    result: str
    target: str
    met: bool | None  # None: no target to meet (a comparison or a note)

    def markdown(self) -> str:
        met = "—" if self.met is None else ("yes" if self.met else "**NO**")
        cells = [self.what, f"`{self.command}`", self.result, self.target, met]
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


TABLE_HEADER = "| what | command | result | target | met? |\n|---|---|---|---|---|"


def table(rows: Sequence[Row]) -> str:
    return "\n".join([TABLE_HEADER, *(row.markdown() for row in rows)])


def print_rows(rows: Sequence[Row]) -> None:
    print(table(rows), flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was actually measured."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    value = seconds * 1000
    return (
        f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    )


def latency_summary(samples: Sequence[float]) -> str:
    return (
        f"p50 {ms(percentile(samples, 50))}, p99 {ms(percentile(samples, 99))} "
        f"(min {ms(min(samples))}, max {ms(max(samples))}; n={len(samples)})"
    )


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min)"


def python_speed_s() -> float:
    """Seconds for a fixed pure-Python loop: the same host's vCPU can be several times slower
    from one day to the next, and the CPU-bound rows move with it, so each run records it."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def machine_line() -> str:
    cores = os.cpu_count() or 0
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cores} cores{f' ({cpu})' if cpu else ''}, {mem_kib / 1024 / 1024:.0f} GiB, {os_name}, "
        f"kernel {platform.release()}, Python {platform.python_version()}; "
        f"CPU speed: a 10M-step Python loop takes {python_speed_s():.2f} s"
    )


# ---------------------------------------------------------------------------------------------
# a fake claude that records when it started

# Everything before the time stamp is bash's own start-up: no command runs, nothing forks.
# EPOCHREALTIME (bash >= 5) is CLOCK_REALTIME, the clock time.time() reads. The prompt (on stdin)
# carries the message's token, so each start is matched to the send that caused it. The output is
# what claude prints for a trivial successful turn in stream-json.
_INIT = {
    "type": "system",
    "subtype": "init",
    "session_id": "@SID@",
    "model": "bench",
    "mcp_servers": [{"name": "hive", "status": "connected"}],
}
_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "ok",
    "session_id": "@SID@",
    "total_cost_usd": 0,
    "duration_ms": 1,
    "num_turns": 1,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


def _printf(event: dict[str, Any]) -> str:
    return (
        "printf '%s\\n' \""
        + json.dumps(event, separators=(",", ":")).replace('"', '\\"').replace("@SID@", "$sid")
        + '"'
    )


FAKE_CLAUDE = (
    r"""#!/bin/bash
sid=00000000-0000-4000-8000-000000000000
prev=
for arg in "$@"; do
  if [[ $prev == --session-id || $prev == --resume ]]; then sid=$arg; fi
  prev=$arg
done
# One turn per stdin line (--input-format stream-json), alive until stdin closes, as claude is.
while read -r prompt; do
t=$EPOCHREALTIME
token=-
[[ $prompt =~ bench-token-([0-9]+) ]] && token=${BASH_REMATCH[1]}
printf '%s %s\n' "${t/,/.}" "$token" >> '@LOG@'
"""
    + _printf(_INIT)
    + "\n"
    + _printf(_RESULT)
    + "\ndone\n"
)


def write_fake_claude(directory: Path, log: Path) -> Path:
    """A `claude` for HIVE_CLAUDE_BIN that appends "<epoch seconds> <token>" to `log`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claude"
    path.write_text(FAKE_CLAUDE.replace("@LOG@", str(log)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log.touch()
    return path


def token_body(i: int) -> str:
    return f"benchmark message {i} [bench-token-{i}]"


def read_starts(log: Path) -> dict[int, float]:
    """token → first start time recorded by the fake claude."""
    starts: dict[int, float] = {}
    for line in log.read_text().splitlines():
        stamp, _, token = line.partition(" ")
        if token.isdigit():
            starts.setdefault(int(token), float(stamp))
    return starts


@contextlib.contextmanager
def child_stdout_silenced() -> Iterator[None]:
    """Children started inside inherit /dev/null as stdout (e.g. the dev server's banner)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def start_dev_server() -> WorkflowEnvironment:
    """The real dev server (in memory) with hive's search attribute, as the tests' `dev_server`."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from hyperhive.embedded_temporal import DYNAMIC_CONFIG
    from hyperhive.settings import HiveSettings
    from hyperhive.temporal_ids import HIVE_AGENT

    temporal = HiveSettings().temporal_cli()
    if temporal is None:
        raise SystemExit("the `temporal` CLI is not installed (make test installs it into .venv)")
    extra: list[str] = []
    for key, value in DYNAMIC_CONFIG.items():
        extra += ["--dynamic-config-value", f"{key}={value}"]
    with child_stdout_silenced():
        return await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(temporal),
            search_attributes=[HIVE_AGENT],
            dev_server_extra_args=extra,
            dev_server_log_level="error",
        )


# ---------------------------------------------------------------------------------------------
# the real `hive up`

AGENT_PORT_SPAN = 1000


def hive_up_env(base: Path, agents: Sequence[str], claude_bin: Path) -> HiveEnv:
    """A fresh state dir with `agents` registered (host `local`) and the env of a `hive up` with
    the embedded Temporal, the process backend, the fake claude and free ports everywhere."""
    import random

    from hyperhive.store.db import make_engine, migrate
    from tests.rig.c0re import register_spawned
    from tests.rig.hive_process import HiveEnv
    from tests.rig.ports import free_ports

    state = base / "state"
    state.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{state / 'hive.db'}")
    try:
        migrate(engine)
        for name in agents:
            register_spawned(state, engine, name, "local")
    finally:
        engine.dispose()
    env = HiveEnv.fresh(state)
    [manager_port] = free_ports(1)
    # Agent pages: a wide window below the kernel's ephemeral range (32768-60999).
    port_min = random.randrange(20_000, 31_000 - AGENT_PORT_SPAN)
    env.extra.update(
        bench_hive_settings(base / "run", claude_bin, manager_port, port_min, AGENT_PORT_SPAN)
    )
    return env


def bench_hive_settings(
    run_dir: Path, claude_bin: Path, manager_port: int, port_min: int, port_span: int
) -> dict[str, str]:
    """What every bench's hive-c0re runs with: the process backend, the fake claude, no
    manager, its agent pages in [port_min, port_min + port_span), no rate limits in the way."""
    return {
        "HIVE_RUN_DIR": str(run_dir),
        "HIVE_CLAUDE_BIN": str(claude_bin),
        "HIVE_CONTAINER_BACKEND": "process",
        "HIVE_CREATE_MANAGER": "false",
        "HIVE_MANAGER_PORT": str(manager_port),
        "HIVE_AGENT_PORT_MIN": str(port_min),
        "HIVE_AGENT_PORT_MAX": str(port_min + port_span - 1),
        "HIVE_SEND_RATE_PER_MINUTE": "100000",
        "HIVE_MAX_TURNS_PER_HOUR": "100000",
    }


async def wait_idle(client: Client, agent: str, turns_total: int, timeout: float = 60) -> None:
    """Until the agent's workflow has run `turns_total` turns and waits for mail again."""
    from hyperhive.models import AgentStatus

    handle = client.get_workflow_handle(f"hive-agent-{agent}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: AgentStatus | None = None
    while loop.time() < deadline:
        try:
            last = await handle.query("status", result_type=AgentStatus)
        except Exception:  # not started yet, or a query right after continue-as-new
            last = None
        if last is not None and last.state == "idle" and last.turns_total >= turns_total:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{agent} did not become idle after {turns_total} turns; last: {last}")


PRAGMA_LAUNCHER = """#!{python}
# `hive`, with `--sqlite-pragma` flags for the embedded Temporal server replacing hyperhive's own
# of the same name (an A/B switch of the benchmarks; hyperhive itself has no setting for it).
import hyperhive.embedded_temporal as embedded

_command = embedded.start_dev_command


def start_dev_command(settings, cli):
    pragmas = {pragmas!r}
    replaced = {{p.split("=", 1)[0] for p in pragmas}}
    command = _command(settings, cli)
    kept = []
    i = 0
    while i < len(command):
        if command[i] == "--sqlite-pragma" and command[i + 1].split("=", 1)[0] in replaced:
            i += 2  # the A/B value replaces hyperhive's own
            continue
        kept.append(command[i])
        i += 1
    for pragma in pragmas:
        kept += ["--sqlite-pragma", pragma]
    return kept


embedded.start_dev_command = start_dev_command
from hive_c0re.cli import main

raise SystemExit(main())
"""


@contextlib.contextmanager
def hive_command(directory: Path, temporal_pragmas: Sequence[str]) -> Iterator[None]:
    """HiveProcess runs a `hive` that adds `--sqlite-pragma P` to the embedded Temporal's
    command line for each P in `temporal_pragmas` (none: the real `hive`, unchanged)."""
    import tests.rig.hive_process as rig

    if not temporal_pragmas:
        yield
        return
    launcher = directory / "hive"
    launcher.write_text(
        PRAGMA_LAUNCHER.format(python=sys.executable, pragmas=list(temporal_pragmas))
    )
    launcher.chmod(0o755)
    saved = rig.HIVE
    rig.HIVE = str(launcher)
    try:
        yield
    finally:
        rig.HIVE = saved
