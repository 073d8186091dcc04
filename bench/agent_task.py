"""A task given to an agent → its answer, with the real claude CLI doing real tool work in bwrap.

    .venv/bin/python -m bench.agent_task [TASKS]

The real `hive up` (embedded Temporal, bwrap backend, the pinned claude CLI), one agent spawned
through an approval, and a local fake model API (tests/fakes/anthropic_api.py) that answers at
once and asks for what a real model would: `Write` a small Python file, run it with `Bash`, and
`send` its output to the operator with the hive MCP tool. Each sample is one task, sent with
`POST /api/messages` to an idle agent, timed to two points: the agent's model sees the message
(its first request of the turn: queueing, the workflow, the sandbox, claude's start-up, its
config, the MCP bridge) and the operator holds the answer (the whole task: four model round
trips, two tools in the sandbox, the reply through the broker).

Baseline in the same run: the same claude binary with the same four-step script, run bare
(no hive, no Temporal, no sandbox, no MCP bridge: `claude -p --permission-mode
bypassPermissions` in a temp dir, its last step a plain text instead of `send`), timed from
process start to the model's first request and to the process's exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.common import PYTHON, Row, latency_summary, load_average, percentile, print_rows
from tests.fakes.anthropic_api import Bash, FakeAnthropic, RecordedRequest, Step, Text, Write
from tests.fakes.fixtures import DEFAULT_CLAUDE_BIN, clean_claude_env
from tests.rig.agent_scripts import send, turn_view
from tests.rig.hive_process import HiveEnv, HiveProcess, run_hive
from tests.rig.ports import free_ports

AGENT = "bench"
CODE = "print(sum(range(1, 101)))\n"


def task_step(request: RecordedRequest, *, bare: bool = False) -> Step:
    """The model's next step in the task, from what the turn has seen so far."""
    view = turn_view(request)
    done = len(view.results) if view is not None else _tool_results_so_far(request)
    if done == 0:
        return Write("/tmp/task.py" if bare else "/work/task.py", CODE)
    if done == 1:
        return Bash(f"python3 {'/tmp' if bare else '/work'}/task.py", "run it")
    if done == 2 and not bare:
        last = view.last if view is not None else ""
        return send("operator", f"task {marker(request)} says {last}")
    return Text("done")


def _tool_results_so_far(request: RecordedRequest) -> int:
    """Tool results in the whole conversation (a bare run is one turn)."""
    messages = (request.body or {}).get("messages", [])
    return sum(
        1
        for message in messages
        if message.get("role") == "user" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    )


def first_request_of(text: str, *, bare: bool = False) -> Callable[[RecordedRequest], bool]:
    """The first model request of the turn `text` started."""

    def matches(request: RecordedRequest) -> bool:
        if request.tool_results or request.kind != "turn":
            return False
        return text in request.prompt if bare else marker(request) == text

    return matches


def marker(request: RecordedRequest) -> str:
    view = turn_view(request)
    return view.wake.body if view is not None else "?"


async def _operator_answer(
    http: httpx.AsyncClient, env: HiveEnv, headers: dict[str, str], containing: str
) -> None:
    while True:
        response = await http.post(
            f"{env.dashboard}/api/operator/recv", params={"wait_seconds": 60}, headers=headers
        )
        if response.status_code == 200 and containing in response.json()["body"]:
            return


async def hive_samples(
    tasks: int, fake: FakeAnthropic, base: Path
) -> tuple[list[float], list[float]]:
    env = HiveEnv.fresh(base / "state")
    [manager_port] = free_ports(1)
    env.extra.update(
        HIVE_RUN_DIR=str(Path(tempfile.mkdtemp(prefix="hive-bench-", dir="/tmp"))),
        HIVE_CLAUDE_BIN=str(DEFAULT_CLAUDE_BIN),
        HIVE_CONTAINER_BACKEND="bwrap",
        HIVE_CREATE_MANAGER="false",
        HIVE_MANAGER_PORT=str(manager_port),
        HIVE_MODEL_BASE_URL=fake.base_url,
        HIVE_API_KEY="sk-ant-api03-bench",
        HIVE_MAX_TURNS_PER_HOUR="100000",
    )
    hive = HiveProcess(env, "up")
    seen: list[float] = []
    answered: list[float] = []
    try:
        hive.wait_ready()
        async with httpx.AsyncClient(timeout=120) as http:
            token = (await http.get(f"{env.dashboard}/api/csrf")).json()["token"]
            headers = {"X-Hive-CSRF": token}
            assert run_hive(env, "spawn", AGENT, "--purpose", "benchmarks").returncode == 0
            await _operator_answer(http, env, headers, f"spawn {AGENT}")
            pending = run_hive(env, "approvals", "--pending", "--json").stdout
            approval_id = str(json.loads(pending)[0]["id"])
            assert run_hive(env, "approve", approval_id).returncode == 0
            await _operator_answer(http, env, headers, f"{AGENT} is up")
            for i in range(tasks + 1):  # the first task warms up (its session is created)
                body = f"task-{i}: write task.py, run it, tell me what it prints"
                started = time.time()
                sent = await http.post(
                    f"{env.dashboard}/api/messages",
                    json={"to": AGENT, "body": body},
                    headers=headers,
                )
                assert sent.status_code == 201, sent.text
                await _operator_answer(http, env, headers, f"task {body} says 5050")
                first = fake.wait_for(first_request_of(body))
                if i:
                    answered.append(time.time() - started)
                    seen.append(first.received_at - started)
    finally:
        hive.interrupt()
    return seen, answered


def bare_samples(tasks: int, fake: FakeAnthropic) -> tuple[list[float], list[float]]:
    seen: list[float] = []
    done: list[float] = []
    for i in range(tasks + 1):
        with tempfile.TemporaryDirectory() as tmp:
            home, cwd = Path(tmp) / "home", Path(tmp) / "work"
            home.mkdir()
            cwd.mkdir()
            env = clean_claude_env(fake.base_url, home)
            prompt = f"bare-{i}: write task.py, run it"
            started = time.time()
            subprocess.run(
                [
                    str(DEFAULT_CLAUDE_BIN),
                    "-p",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                    "--permission-mode",
                    "bypassPermissions",
                ],
                input=prompt,
                env=env,
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            ended = time.time()
            first = fake.wait_for(first_request_of(prompt, bare=True))
            if i:
                seen.append(first.received_at - started)
                done.append(ended - started)
    return seen, done


async def run(tasks: int) -> list[Row]:
    fake = FakeAnthropic(responder=lambda r: task_step(r, bare="bare-" in r.messages_text)).start()
    try:
        load = load_average()
        with tempfile.TemporaryDirectory() as tmp:
            seen, answered = await hive_samples(tasks, fake, Path(tmp))
        bare_seen, bare_done = bare_samples(tasks, fake)
    finally:
        fake.stop()
    command = f"{PYTHON} -m bench.agent_task {tasks}"
    return [
        Row(
            "a task to an idle agent → its answer: operator `POST /api/messages`, the agent's "
            "claude (real CLI, bwrap, `hive up`) writes a file, runs it with Bash and `send`s "
            "the output (4 model round trips against a local API that answers at once)",
            command,
            f"answer {latency_summary(answered)}; the model sees the message after "
            f"{latency_summary(seen)}; {load}",
            "p50 ≤ 5 s",
            percentile(answered, 50) <= 5.0,
        ),
        Row(
            "baseline: the same claude and script run bare (no hive, no sandbox, no Temporal, "
            "no MCP bridge), from process start",
            command,
            f"done {latency_summary(bare_done)}; first model request {latency_summary(bare_seen)}"
            f"; hive / bare: p50 {percentile(answered, 50) / percentile(bare_done, 50):.1f}×",
            "—",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="?", type=int, default=10)
    print_rows(asyncio.run(run(parser.parse_args().tasks)))


if __name__ == "__main__":
    main()
