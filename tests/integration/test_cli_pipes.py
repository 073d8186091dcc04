"""`hive … | head -1` as an operator types it: a reader that leaves early (head, `grep -m1`, a
pager quit at once) ends `hive` quietly with 0, never a BrokenPipeError traceback.

Each pipeline runs in bash and reports hive's own exit code (PIPESTATUS) and its stderr. The store
holds enough agents and turn events that every listing outlasts the pipe's 64 KiB buffer, so
`hive` is still writing when `head` has gone; the `true` reader leaves before hive writes at all.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hyperhive.store import agents as agent_store
from tests.rig.c0re import RunningC0re
from tests.rig.hive_process import HIVE, HiveEnv

pytestmark = pytest.mark.integration

# Rows enough that `hive status` and `hive list` print well over 64 KiB + Python's 8 KiB buffer.
AGENTS = 600
EVENTS = 300


def piped(env: HiveEnv, args: list[str], reader: str, err: Path) -> tuple[int, str, str]:
    """`hive ARGS 2>ERR | READER`: hive's exit code, what the reader printed, hive's stderr."""
    script = f'"$PIPED_HIVE" "$@" 2>"$PIPED_ERR" | {reader}; exit "${{PIPESTATUS[0]}}"'
    done = subprocess.run(
        ["bash", "-c", script, "hive", *args],
        env=env.environ() | {"PIPED_HIVE": HIVE, "PIPED_ERR": str(err)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.stderr == "", done.stderr  # bash itself had nothing to say
    return done.returncode, done.stdout, err.read_text()


def seed(hive: RunningC0re) -> None:
    """Many agents with a status line, and a long turn log for alice, straight into the store."""
    engine = hive.engine()
    try:
        host_id = hive.env.extra["HIVE_HOST_ID"]
        for i in range(AGENTS):
            name = f"p{i:03d}"
            agent_store.register_agent(engine, name, host_id)
            agent_store.set_status_text(engine, name, f"{name} is reading a long file " * 4)
        agent_store.append_turn_events(
            engine,
            "alice",
            "turn-pipes",
            [(i, "hive", {"text": f"note {i}: " + "words " * 80}) for i in range(EVENTS)],
        )
    finally:
        engine.dispose()


FIRST_LINE = {
    ("status",): "hive-c0re ",
    ("status", "--json"): "{",
    ("list",): "NAME ",
    ("list", "--json"): "[",
    ("approvals",): "no approvals",
    ("urls",): "dashboard ",
    ("settings",): "",
    ("logs", "alice"): "",
    ("logs", "alice", "--json"): '{"',
    ("logs", "alice", "--follow"): "",
}


async def test_a_reader_that_leaves_early_ends_hive_quietly(start_c0re, tmp_path):
    hive = await start_c0re(agents=["alice"])
    seed(hive)
    err = tmp_path / "hive.err"

    for args, starts in FIRST_LINE.items():
        code, out, stderr = piped(hive.env, list(args), "head -1", err)
        shown = f"hive {' '.join(args)} | head -1"
        assert (code, stderr) == (0, ""), f"{shown}: exit {code}\n{stderr}"
        assert out.count("\n") == 1 and out.startswith(starts), f"{shown}: {out!r}"
        if args[0] == "logs" and "--json" not in args:
            assert "#" in out and "[hive] note 0:" in out, out

        # A reader that never reads: hive's very first write finds the pipe closed.
        code, out, stderr = piped(hive.env, list(args), "true", err)
        assert (code, out, stderr) == (0, "", ""), f"hive {' '.join(args)} | true: {stderr}"


async def test_a_closed_pipe_does_not_hide_a_failure(tmp_path):
    """No hive-c0re: `hive status | head -1` still says so on stderr, with its exit code."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = HiveEnv.fresh(tmp_path / "state")
    env.extra["HIVE_RUN_DIR"] = str(run_dir)
    err = tmp_path / "hive.err"
    code, out, stderr = piped(env, ["status"], "head -1", err)
    assert code == 3 and out == ""
    assert stderr.startswith(f"hive: hive-c0re is not running (no {run_dir}/host.sock)")
    assert "hive up" in stderr
