"""A tiny stdio MCP server (MCP SDK 2.x) that tests hand to the real claude CLI.

Each tool call is appended as one JSON line to the file named by ``$ECHO_MCP_LOG`` (if set), so a
test can see that the CLI really called us, with which arguments, without parsing the CLI's output.

Run as ``python -m tests.fakes.echo_mcp_server`` or ``python path/to/echo_mcp_server.py``; it
imports nothing from this repository, so running it by path needs no ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mcp.server.mcpserver import MCPServer

LOG_ENV = "ECHO_MCP_LOG"

server = MCPServer("echo")


def _log(tool: str, arguments: dict[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid(), "ts": time.time()})
    # One write of a whole line in append mode: concurrent servers cannot interleave lines.
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


# structured_output=False: for a tool with an output schema claude 2.1.197 sends the model the
# JSON of structuredContent ('{"result":"recorded: x"}') instead of the text content.
@server.tool(structured_output=False)
def record(text: str) -> str:
    """Record a piece of text and confirm it."""
    _log("record", {"text": text})
    return f"recorded: {text}"


@server.tool(structured_output=False)
def add(a: int, b: int) -> int:
    """Add two integers."""
    _log("add", {"a": a, "b": b})
    return a + b


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The calls logged so far (``[]`` if the file does not exist yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    # Stands for a bridge that is slow to start (e.g. on a loaded host).
    time.sleep(float(os.environ.get("ECHO_MCP_START_DELAY_S", "0")))
    server.run("stdio")
