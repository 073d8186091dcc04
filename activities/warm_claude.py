"""Warm agents: one claude per recently active agent, kept alive between its turns.

Starting claude for a turn costs seconds (Node, the sandbox, the MCP bridge, loading the
session); a claude started with `--input-format stream-json` reads one user message per stdin
line and ends each turn with a `result` event while it lives on, so the next turn reaches the
model in tens of milliseconds. The turn activity takes the agent's warm claude from this pool
when there is one started with exactly the turn's command, environment and config (its
fingerprint), and gives it back after a turn that ended well. Everything else (a crash, a hang,
a cancel, an error result, a changed config) kills it, and the next turn starts a fresh claude
that resumes the session, as a cold turn always did.

Costs are bounded: at most `HIVE_WARM_AGENTS` are kept (the least recently used goes first) and
each goes cold after `HIVE_WARM_IDLE_S` without a turn. A warm claude idles on a blocking read
of its stdin (no CPU). Warm processes are hive-c0re's children like every turn: they die with it
(parent-death signal) and the next turn after a restart is a cold one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from hyperhive.child_process import kill_process_group
from hyperhive.claude_stream.events import ResultEvent

log = logging.getLogger(__name__)

STDERR_TAIL = 8 * 1024
# A warm claude told to stop (stdin closed) exits at once; one that does not is killed.
CLOSE_GRACE_S = 5.0


def fingerprint(argv: Sequence[str], env: Mapping[str, str], files: Iterable[bytes]) -> str:
    """What a warm claude was started with: another turn may use it only if this is the same.

    `argv` is the turn's command as a cold turn would start it; `files` the config it reads at
    start (CLAUDE.md, settings.json), whose change (an applied commit) must start a fresh one.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([list(argv), sorted(env.items())]).encode())
    for data in files:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def user_message_line(prompt: str) -> bytes:
    """One turn for `claude --input-format stream-json`: a user message on one line."""
    line = {"type": "user", "message": {"role": "user", "content": prompt}}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


class WarmClaude:
    """One agent's claude process, fed turns on its stdin."""

    def __init__(self, agent: str, process: asyncio.subprocess.Process, fingerprint: str) -> None:
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        self.agent = agent
        self.process = process
        self.fingerprint = fingerprint
        self.turns = 0
        self.started = time.monotonic()
        self.last_used = self.started
        # `total_cost_usd` in a result event is the process's running total, not the turn's.
        self._cost_so_far = 0.0
        self._stderr = bytearray()
        self._stderr_task = asyncio.create_task(self._drain_stderr(process.stderr))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def start_turn(self, prompt: str, *, last: bool) -> None:
        """Write the turn's message; `last`: close stdin after it, so claude exits after its
        result (a turn that is not kept warm)."""
        stdin = self.process.stdin
        assert stdin is not None
        self.turns += 1
        self.last_used = time.monotonic()
        # A claude that died writes nothing: its exit code and stderr say why.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(user_message_line(prompt))
            await stdin.drain()
        if last:
            stdin.close()

    async def readline(self) -> bytes:
        stdout = self.process.stdout
        assert stdout is not None
        return await stdout.readline()

    def turn_cost(self, running_total: float | None) -> float | None:
        """This turn's cost out of the result's running total for the process."""
        if running_total is None:
            return None
        cost = max(0.0, running_total - self._cost_so_far)
        self._cost_so_far = max(self._cost_so_far, running_total)
        return cost

    def with_turn_cost(self, result: ResultEvent) -> ResultEvent:
        """A `result` event as the turn's own: `total_cost_usd` is this turn's cost (what the
        agent page, `hive logs` and the spend show); the process's running total is kept as
        `process_total_cost_usd`."""
        if result.total_cost_usd is None:
            return result
        cost = self.turn_cost(result.total_cost_usd)
        raw = {
            **result.raw,
            "total_cost_usd": cost,
            "process_total_cost_usd": result.raw["total_cost_usd"],
        }
        return dataclasses.replace(result, raw=raw, total_cost_usd=cost)

    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace").strip()[-500:]

    async def wait_exit(self, within_s: float = CLOSE_GRACE_S) -> int | None:
        """The exit code once the process ended (its stderr read to the end), None if it had
        not ended within `within_s`."""
        try:
            code = await asyncio.wait_for(asyncio.shield(self.process.wait()), within_s)
        except TimeoutError:
            return None
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), within_s)
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group (the sandbox, claude, its MCP bridge, its tools)."""
        if self.alive:
            kill_process_group(self.pid)

    async def close(self) -> None:
        """Let it go: stdin closed (claude exits 0), killed if it does not."""
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        if await self.wait_exit() is None:
            self.kill()
            await self.wait_exit()
        self._stderr_task.cancel()

    async def _drain_stderr(self, stderr: asyncio.StreamReader) -> None:
        """Read stderr all along (a full pipe would block claude), keeping only its tail."""
        while chunk := await stderr.read(64 * 1024):
            self._stderr += chunk
            if len(self._stderr) > STDERR_TAIL:
                del self._stderr[:-STDERR_TAIL]


class WarmPool:
    """The idle warm claudes of this host's worker, at most `max_warm`, each for `idle_s`."""

    def __init__(self, max_warm: int, idle_s: float) -> None:
        self.max_warm = max_warm
        self.idle_s = idle_s
        self._idle: OrderedDict[str, WarmClaude] = OrderedDict()  # least recently used first
        self._busy: dict[str, WarmClaude] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.started_warm = 0
        self.started_cold = 0

    @property
    def enabled(self) -> bool:
        return self.max_warm > 0

    def take(self, agent: str, wanted: str) -> WarmClaude | None:
        """The agent's idle warm claude if it is alive and was started as `wanted`; any other
        one it had is let go."""
        self._cancel_timer(agent)
        claude = self._idle.pop(agent, None)
        if claude is None:
            return None
        if claude.alive and claude.fingerprint == wanted:
            return claude
        why = "it exited" if not claude.alive else "its command, environment or config changed"
        log.info("%s's warm claude (pid %d) is not used: %s", agent, claude.pid, why)
        self._let_go(claude)
        return None

    def running(self, claude: WarmClaude, *, warm: bool) -> None:
        """`claude` runs a turn now (`warm`: it was taken from the pool)."""
        self._busy[claude.agent] = claude
        if warm:
            self.started_warm += 1
        else:
            self.started_cold += 1

    async def finish(self, claude: WarmClaude, *, keep: bool) -> None:
        """`done`, and a claude not kept has exited when this returns: a turn is over only
        once its process is gone (a cold turn always ended so)."""
        if keep and self.enabled and claude.alive:
            self.done(claude, keep=True)
            return
        if self._busy.get(claude.agent) is claude:
            del self._busy[claude.agent]
        await asyncio.shield(self._let_go(claude))

    def done(self, claude: WarmClaude, *, keep: bool) -> None:
        """Its turn is over: keep it warm for the next one, or let it go."""
        if self._busy.get(claude.agent) is claude:
            del self._busy[claude.agent]
        if not (keep and self.enabled and claude.alive):
            self._let_go(claude)
            return
        agent = claude.agent
        previous = self._idle.pop(agent, None)
        if previous is not None and previous is not claude:
            self._let_go(previous)
        self._idle[agent] = claude
        self._cancel_timer(agent)
        loop = asyncio.get_running_loop()
        self._timers[agent] = loop.call_later(self.idle_s, self._expire, agent, claude)
        while len(self._idle) > self.max_warm:
            oldest, coldest = next(iter(self._idle.items()))
            log.info(
                "%s goes cold: %d agents are warm, HIVE_WARM_AGENTS=%d",
                oldest,
                len(self._idle),
                self.max_warm,
            )
            self._cancel_timer(oldest)
            del self._idle[oldest]
            self._let_go(coldest)

    def warm_agents(self) -> frozenset[str]:
        """Agents with a live claude kept (or running a turn) in this process."""
        live = [c for c in (*self._idle.values(), *self._busy.values()) if c.alive]
        return frozenset(c.agent for c in live)

    def starts(self) -> tuple[int, int]:
        """Turns that found their agent's claude warm, and turns that started one."""
        return self.started_warm, self.started_cold

    def rss_bytes(self) -> int:
        """Resident memory of all warm claudes with their sandboxes (read from /proc: call it
        off the event loop)."""
        claudes = [*list(self._idle.values()), *list(self._busy.values())]
        return sum(tree_rss_bytes(c.pid) for c in claudes if c.alive)

    def let_go(self, agent: str) -> None:
        """The agent's idle warm claude goes (its container stops, say)."""
        self._cancel_timer(agent)
        claude = self._idle.pop(agent, None)
        if claude is not None:
            self._let_go(claude)

    async def close_all(self) -> None:
        for agent in list(self._idle):
            self.let_go(agent)
        for claude in list(self._busy.values()):
            claude.kill()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _expire(self, agent: str, claude: WarmClaude) -> None:
        self._timers.pop(agent, None)
        if self._idle.get(agent) is claude:
            del self._idle[agent]
            log.info(
                "%s goes cold after %.0f s without a turn (HIVE_WARM_IDLE_S)", agent, self.idle_s
            )
            self._let_go(claude)

    def _cancel_timer(self, agent: str) -> None:
        timer = self._timers.pop(agent, None)
        if timer is not None:
            timer.cancel()

    def _let_go(self, claude: WarmClaude) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(claude.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants (the sandbox, claude, its MCP bridge),
    0 for a process that is gone."""
    total = 0
    stack = [root]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss_bytes(pid)
        stack.extend(_children(pid))
    return total


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` alone, 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as children:
                found.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return found
