"""Where a warm send's time goes, for bench/warm_agents.py: each sample's stages along the path
(the POST, Temporal's workflow history, the turn's stored event, the fake model), and the floor
under them, the same claude run bare with `--input-format stream-json`."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from activities.warm_claude import user_message_line
from bench.common import ms
from bench.warm_rig import first_request_of
from hyperhive.store import agents as agent_store
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.fixtures import DEFAULT_CLAUDE_BIN, clean_claude_env
from tests.rig.c0re import RunningC0re

STAGES = ("posted", "signal", "scheduled", "started", "stdin", "model")
STAGE_NAMES = {
    "posted": "POST returned",
    "signal": "signal recorded",
    "scheduled": "`run_turn` scheduled",
    "started": "activity started",
    "stdin": "prompt on claude's stdin",
    "model": "model request",
}


@dataclass
class Sample:
    agent: str
    sent: float
    posted: float
    message_id: int
    model_at: float  # the fake model received the turn's first request

    @property
    def latency(self) -> float:
        return self.model_at - self.sent


def turn_flags(hive: RunningC0re, agents: Sequence[str]) -> dict[int, tuple[str, bool, float]]:
    """message id → (turn id, warm, time the turn's "hive" event was stored), from the store.

    The event is stored right after the prompt was written to claude's stdin."""
    engine = hive.engine()
    try:
        found: dict[int, tuple[str, bool, float]] = {}
        for agent in agents:
            for event in agent_store.turn_events(engine, agent, limit=100_000):
                payload = event.payload
                if event.kind == "hive" and "message_id" in payload:
                    warm = bool(payload.get("warm"))
                    stored = event.created_at.timestamp()
                    found.setdefault(int(payload["message_id"]), (event.turn_id, warm, stored))
        return found
    finally:
        engine.dispose()


async def turn_timeline(hive: RunningC0re, agent: str) -> dict[str, dict[str, float]]:
    """turn id → {"signal", "scheduled", "started"}: from the agent's workflow history, when
    Temporal recorded the `notify` signal that woke the turn, scheduled `run_turn` and when the
    worker started it."""
    history = await hive.workflow(agent).fetch_history()
    timeline: dict[str, dict[str, float]] = {}
    by_event: dict[int, str] = {}
    last_signal = 0.0
    for event in history.events:
        at = event.event_time.ToNanoseconds() / 1e9
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            last_signal = at
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name != "run_turn":
                continue
            turn_id = str(json.loads(attributes.input.payloads[0].data)["turn_id"])
            by_event[event.event_id] = turn_id
            timeline[turn_id] = {"signal": last_signal, "scheduled": at}
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            turn = by_event.get(event.activity_task_started_event_attributes.scheduled_event_id)
            if turn is not None:
                timeline[turn].setdefault("started", at)
    return timeline


async def stages_of(
    hive: RunningC0re, samples: Sequence[Sample], flags: dict[int, tuple[str, bool, float]]
) -> list[dict[str, float]]:
    """For each sample: every stage's time since the send (stages not found are left out)."""
    timelines: dict[str, dict[str, float]] = {}
    for agent in {s.agent for s in samples}:
        timelines.update(await turn_timeline(hive, agent))
    found: list[dict[str, float]] = []
    for sample in samples:
        turn_id, _, stored = flags.get(sample.message_id, ("", False, 0.0))
        marks = {"posted": sample.posted, **timelines.get(turn_id, {}), "model": sample.model_at}
        if stored:
            marks["stdin"] = stored
        found.append({k: v - sample.sent for k, v in marks.items() if v})
    return found


def stage_medians(stages: Sequence[dict[str, float]]) -> str:
    """Median time since the send at which each stage was reached."""
    parts = []
    for stage in STAGES:
        values = [s[stage] for s in stages if stage in s]
        if values:
            parts.append(f"{STAGE_NAMES[stage]} +{ms(statistics.median(values))}")
    return " → ".join(parts)


# ---------------------------------------------------------------------------------------------
# the floor: the same claude, bare


async def until_result(stdout: asyncio.StreamReader) -> None:
    """Read a stream-json turn to its `result` event."""
    while line := await stdout.readline():
        if json.loads(line).get("type") == "result":
            return
    raise RuntimeError("bare claude exited before its turn's result")


async def bare_stdin_to_model(fake: FakeAnthropic, count: int) -> list[float]:
    """claude's own share of a warm turn's start: the same CLI run bare (no sandbox, no MCP
    bridge, no model proxy) with `--input-format stream-json`, one warm-up turn, then `count`
    user messages, each timed from its stdin write to the model's first request."""
    with tempfile.TemporaryDirectory(prefix="hb-bare-", dir="/tmp") as tmp:
        home, cwd = Path(tmp) / "home", Path(tmp) / "work"
        home.mkdir()
        cwd.mkdir()
        claude = await asyncio.create_subprocess_exec(
            str(DEFAULT_CLAUDE_BIN),
            *("-p", "--input-format", "stream-json", "--output-format", "stream-json"),
            *("--verbose", "--permission-mode", "bypassPermissions"),
            env=clean_claude_env(fake.base_url, home),
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=16 * 1024 * 1024,
        )
        assert claude.stdin is not None and claude.stdout is not None
        latencies: list[float] = []
        try:
            for i in range(count + 1):
                body = f"bare-{i} [{os.getpid()}-{time.monotonic_ns()}]"
                written = time.time()
                claude.stdin.write(user_message_line(body))
                await claude.stdin.drain()
                request = await fake.wait_for_async(first_request_of(body), timeout=120)
                if i:  # the first one is claude's start-up
                    latencies.append(request.received_at - written)
                await until_result(claude.stdout)
        finally:
            claude.stdin.close()
            await asyncio.wait_for(claude.wait(), 30)
    return latencies
