"""The warm pool (activities/warm_claude.py) with real child processes: `cat` started as the turn
activity starts claude (pipes, its own session) stands for a warm claude. It echoes each stdin
line, and exits 0 when its stdin is closed (let go) or -SIGKILL when killed; every wait for an
exit is bounded."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from activities.warm_claude import (
    WarmClaude,
    WarmPool,
    fingerprint,
    tree_rss_bytes,
    user_message_line,
)
from hyperhive.claude_stream.events import ResultEvent, parse_line

EXIT_S = 10.0
FP = "fingerprint-1"

Spawn = Callable[..., Awaitable[WarmClaude]]
MakePool = Callable[..., WarmPool]


async def exited(claude: WarmClaude) -> int:
    """Its exit code, once it has exited (a test fails after EXIT_S)."""
    return await asyncio.wait_for(claude.process.wait(), EXIT_S)


async def start_process(argv: Sequence[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Starts an agent's stand-in claude; whatever a test leaves running is killed after it."""
    started: list[WarmClaude] = []

    async def start(agent: str, fp: str = FP) -> WarmClaude:
        claude = WarmClaude(agent, await start_process(["cat"]), fp)
        started.append(claude)
        return claude

    yield start
    for claude in started:
        claude.kill()
    for claude in started:
        await exited(claude)


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[WarmPool] = []

    def make(max_warm: int = 4, idle_s: float = 600.0) -> WarmPool:
        pool = WarmPool(max_warm, idle_s)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close_all()


async def kept(pool: WarmPool, claude: WarmClaude) -> WarmClaude:
    """`claude` ran a cold turn that ended well and is kept warm."""
    pool.running(claude, warm=False)
    pool.done(claude, keep=True)
    return claude


# -- take ------------------------------------------------------------------------------------


async def test_take_returns_the_kept_claude_started_the_same_way(spawn, make_pool):
    pool = make_pool()
    assert pool.take("alice", FP) is None  # nothing kept yet
    claude = await kept(pool, await spawn("alice"))
    assert pool.warm_agents() == {"alice"}

    taken = pool.take("alice", FP)
    assert taken is claude and taken.alive
    pool.running(taken, warm=True)
    # The very process, pipes and all: the next turn's message reaches it.
    await taken.start_turn("second turn", last=False)
    assert await asyncio.wait_for(taken.readline(), EXIT_S) == user_message_line("second turn")
    assert taken.turns == 1
    # Running a turn it is still warm, but not there to take twice.
    assert pool.warm_agents() == {"alice"}
    assert pool.take("alice", FP) is None
    assert taken.alive
    assert pool.starts() == (1, 1)


async def test_another_fingerprint_lets_the_kept_claude_go(spawn, make_pool):
    pool = make_pool()
    claude = await kept(pool, await spawn("alice"))
    # An applied commit changed its CLAUDE.md: the turn must start a fresh claude.
    assert pool.take("alice", "fingerprint-2") is None
    assert await exited(claude) == 0  # let go: stdin closed, it exited by itself
    assert pool.warm_agents() == frozenset()
    assert pool.take("alice", FP) is None


async def test_a_kept_claude_that_died_is_not_taken(spawn, make_pool):
    pool = make_pool()
    claude = await kept(pool, await spawn("alice"))
    claude.kill()
    assert await exited(claude) == -signal.SIGKILL
    assert pool.warm_agents() == frozenset()
    assert pool.take("alice", FP) is None


async def test_agents_are_kept_apart(spawn, make_pool):
    pool = make_pool()
    alice = await kept(pool, await spawn("alice"))
    bob = await kept(pool, await spawn("bob"))
    assert pool.take("bob", FP) is bob
    assert pool.take("alice", FP) is alice


# -- letting go ------------------------------------------------------------------------------


async def test_done_without_keep_lets_it_go(spawn, make_pool):
    pool = make_pool()
    claude = await spawn("alice")
    pool.running(claude, warm=False)
    assert pool.warm_agents() == {"alice"}
    pool.done(claude, keep=False)  # the turn failed, was cancelled, hung, ...
    assert await exited(claude) == 0
    assert pool.warm_agents() == frozenset()
    assert pool.take("alice", FP) is None


async def test_a_claude_that_died_in_its_turn_is_not_kept(spawn, make_pool):
    pool = make_pool()
    claude = await spawn("alice")
    pool.running(claude, warm=False)
    claude.kill()
    await exited(claude)
    pool.done(claude, keep=True)
    assert pool.warm_agents() == frozenset()
    assert pool.take("alice", FP) is None


async def test_beyond_max_warm_the_least_recently_used_goes_cold(spawn, make_pool):
    pool = make_pool(max_warm=2)
    alice = await kept(pool, await spawn("alice"))
    bob = await kept(pool, await spawn("bob"))
    # alice has another turn: bob is now the least recently used.
    taken = pool.take("alice", FP)
    assert taken is alice
    pool.running(alice, warm=True)
    pool.done(alice, keep=True)

    carol = await kept(pool, await spawn("carol"))
    assert await exited(bob) == 0
    assert alice.alive and carol.alive
    assert pool.warm_agents() == {"alice", "carol"}
    assert pool.take("bob", FP) is None

    dave = await kept(pool, await spawn("dave"))
    assert await exited(alice) == 0
    assert pool.warm_agents() == {"carol", "dave"} and dave.alive


async def test_a_kept_claude_goes_cold_after_idle_s(spawn, make_pool):
    pool = make_pool(idle_s=0.05)
    # bob is taken for a turn before his idle time is up: his turn must not be cut short.
    bob = await kept(pool, await spawn("bob"))
    assert pool.take("bob", FP) is bob
    pool.running(bob, warm=True)
    alice = await kept(pool, await spawn("alice"))

    assert await exited(alice) == 0
    assert pool.take("alice", FP) is None
    # bob's idle time (it started first) was over before alice's: still running his turn.
    assert bob.alive and pool.warm_agents() == {"bob"}


async def test_max_warm_0_never_keeps_one(spawn, make_pool):
    pool = make_pool(max_warm=0)
    assert not pool.enabled
    claude = await kept(pool, await spawn("alice"))
    assert await exited(claude) == 0
    assert pool.warm_agents() == frozenset()
    assert pool.take("alice", FP) is None


async def test_let_go_ends_an_agents_kept_claude(spawn, make_pool):
    pool = make_pool()
    alice = await kept(pool, await spawn("alice"))
    bob = await kept(pool, await spawn("bob"))
    pool.let_go("alice")  # its container stops
    assert await exited(alice) == 0
    assert bob.alive and pool.warm_agents() == {"bob"}


async def test_close_all_leaves_nothing_running(spawn, make_pool):
    pool = make_pool()
    idle = [await kept(pool, await spawn(name)) for name in ("alice", "bob")]
    busy = await spawn("carol")
    pool.running(busy, warm=False)

    await pool.close_all()

    # The idle ones were let go and waited for; the one in a turn was killed.
    assert [claude.process.returncode for claude in idle] == [0, 0]
    assert await exited(busy) == -signal.SIGKILL
    assert pool.warm_agents() == frozenset()
    assert pool.rss_bytes() == 0


# -- costs and fingerprints ------------------------------------------------------------------


async def test_turn_cost_subtracts_the_processs_running_total(spawn):
    claude = await spawn("alice")
    assert claude.turn_cost(None) is None
    assert claude.turn_cost(0.5) == pytest.approx(0.5)
    assert claude.turn_cost(0.8) == pytest.approx(0.3)
    assert claude.turn_cost(0.8) == 0.0  # a turn that cost nothing
    assert claude.turn_cost(0.1) == 0.0  # never negative
    assert claude.turn_cost(1.0) == pytest.approx(0.2)


def test_fingerprint_changes_with_the_command_the_environment_and_the_config_files():
    argv = ["claude", "--input-format", "stream-json", "--resume", "s1"]
    env = {"HOME": "/home/alice", "PATH": "/bin"}
    files = [b"# CLAUDE.md\n", b'{"model": "opus"}']
    fp = fingerprint(argv, env, files)
    assert fingerprint(list(argv), dict(env), list(files)) == fp
    assert fingerprint(argv, dict(reversed(env.items())), files) == fp  # order of env is not
    assert fingerprint([*argv[:-1], "s2"], env, files) != fp
    assert fingerprint(argv, {**env, "PATH": "/usr/bin"}, files) != fp
    assert fingerprint(argv, {**env, "EXTRA": "1"}, files) != fp
    assert fingerprint(argv, env, [b"# CLAUDE.md\nbe brief\n", files[1]]) != fp
    assert fingerprint(argv, env, [files[0], b'{"model": "sonnet"}']) != fp
    # The same bytes split another way between the files are another config.
    assert fingerprint(argv, env, [b"ab", b"c"]) != fingerprint(argv, env, [b"a", b"bc"])


# -- memory ----------------------------------------------------------------------------------

# A small parent (sh, which does not exec its last command here) over a child that holds 64 MiB:
# the child is counted in the parent's tree.
_BIG_CHILD = (
    f"{sys.executable} -c 'import sys; b = bytearray(64 << 20); "
    'print("ready", flush=True); sys.stdin.read()\'; true'
)


async def test_tree_rss_bytes_counts_a_live_process_and_its_children_and_nothing_once_gone():
    process = await start_process(["sh", "-c", _BIG_CHILD])
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), EXIT_S) == b"ready\n"
        assert tree_rss_bytes(process.pid) > 64 << 20
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await asyncio.wait_for(process.wait(), EXIT_S)
    assert tree_rss_bytes(process.pid) == 0


async def test_the_pool_reports_the_memory_of_its_live_claudes(spawn, make_pool):
    pool = make_pool()
    alice = await kept(pool, await spawn("alice"))
    assert tree_rss_bytes(alice.pid) > 0
    assert pool.rss_bytes() > 0
    pool.let_go("alice")
    await exited(alice)
    assert pool.rss_bytes() == 0
    assert tree_rss_bytes(alice.pid) == 0


async def test_a_turn_that_does_not_keep_its_claude_ends_with_it_gone(
    spawn: Spawn, make_pool: MakePool
) -> None:
    pool = make_pool()
    ended = await spawn("alice")
    pool.running(ended, warm=False)
    await pool.finish(ended, keep=False)
    # Already gone when finish returns: nothing of the turn outlives it.
    assert ended.process.returncode == 0
    assert pool.warm_agents() == frozenset()

    off = make_pool(max_warm=0)
    cold = await spawn("bob")
    off.running(cold, warm=False)
    await off.finish(cold, keep=True)  # warm agents off: kept by no one
    assert cold.process.returncode == 0

    warm = await spawn("carol")
    pool.running(warm, warm=False)
    await pool.finish(warm, keep=True)
    assert warm.alive and pool.take("carol", FP) is warm


async def test_each_result_shows_its_own_turns_cost_not_the_processs_total(spawn: Spawn) -> None:
    claude = await spawn("alice")
    shown = []
    for running_total in (0.23, 0.47, 0.70):
        line = json.dumps({"type": "result", "subtype": "success", "total_cost_usd": running_total})
        event = claude.with_turn_cost(result_event(line))
        shown.append(event.raw["total_cost_usd"])
        assert event.raw["process_total_cost_usd"] == running_total
        assert event.total_cost_usd == event.raw["total_cost_usd"]
    assert shown == pytest.approx([0.23, 0.24, 0.23])
    # A result without a cost is left as it is.
    bare = result_event('{"type": "result", "subtype": "success"}')
    assert claude.with_turn_cost(bare) is bare


def result_event(line: str) -> ResultEvent:
    event = parse_line(line)
    assert isinstance(event, ResultEvent)
    return event
