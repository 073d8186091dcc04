"""Script the fake model as hive agents: read the wake prompt, decide what the agent does."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.anthropic_api import (
    RecordedRequest,
    RequestPredicate,
    Responder,
    Step,
    Text,
    ToolUse,
)

_WHO = re.compile(r"^You are (\S+?),", re.M)
_FROM = re.compile(r"^A message from (\S+?)(?: \(.*?\))? woke you\.", re.M)
_BODY = re.compile(r"^<<<MESSAGE (\w+)\n(.*?)\nMESSAGE \1>>>$", re.M | re.S)


@dataclass(frozen=True)
class Wake:
    agent: str
    sender: str
    body: str


def parse_wake(prompt: str) -> Wake | None:
    who, sender, body = _WHO.search(prompt), _FROM.search(prompt), _BODY.search(prompt)
    if not (who and sender and body):
        return None
    return Wake(who.group(1), sender.group(1), body.group(2))


def send(to: str, body: str) -> ToolUse:
    return ToolUse("mcp__hive__send", {"to": to, "body": body})


def hive_responder(behaviour: Callable[[Wake], Step | None]) -> Responder:
    """After a tool call the agent just ends its turn; on a wake prompt `behaviour` decides."""

    def respond(request: RecordedRequest) -> Step:
        if request.tool_results:
            return Text("done")
        wake = parse_wake(request.prompt)
        if wake is None:
            return Text("(not a wake prompt)")
        return behaviour(wake) or Text("nothing to do")

    return respond


def wake_of(request: RecordedRequest) -> Wake | None:
    return None if request.tool_results else parse_wake(request.prompt)


_RECV = re.compile(r"^message #(\d+) from (\S+) at [^\n]*:\n(.*)$", re.S)


@dataclass(frozen=True)
class TurnView:
    """One model request seen as a step of an agent's turn."""

    wake: Wake
    results: list[str]  # tool results since the wake prompt, oldest first

    @property
    def last(self) -> str | None:
        return self.results[-1] if self.results else None


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(b.get("text", b.get("content", ""))) for b in content)
    return ""


def turn_view(request: RecordedRequest) -> TurnView | None:
    """The latest wake prompt in the conversation and the tool results that followed it.

    With --resume the conversation holds earlier turns too: only the latest wake counts."""
    messages = request.body.get("messages", []) if request.body else []
    wake, results = None, []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            if block.get("type") == "tool_result":
                results.append(_text_of(block.get("content")))
            elif block.get("type") == "text":
                found = parse_wake(block.get("text", ""))
                if found is not None:
                    wake, results = found, []
    return TurnView(wake, results) if wake else None


def for_agent(name: str) -> RequestPredicate:
    """A ``FakeAnthropic.script_when`` predicate: the turn requests of agent ``name``.

    Recognised by the latest wake prompt of the conversation (``You are <name>, …``), so the tool
    round-trips of a turn match too. Side requests (titles, probes) never match, nor do turns whose
    conversation holds no wake prompt.
    """

    def accepts(request: RecordedRequest) -> bool:
        if request.kind != "turn":
            return False
        view = turn_view(request)
        return view is not None and view.wake.agent == name

    accepts.__qualname__ = f"for_agent({name!r})"
    return accepts


def received(tool_result: str) -> tuple[str, str] | None:
    """(sender, body) of a recv tool result that carried a message."""
    match = _RECV.match(tool_result)
    return (match.group(2), match.group(3)) if match else None


def recv(wait_seconds: float = 0) -> ToolUse:
    return ToolUse("mcp__hive__recv", {"wait_seconds": wait_seconds})
