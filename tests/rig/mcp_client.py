"""An MCP client straight to an agent's unix socket: what the bridge does, without the bridge."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

# A client's first request, as JSON-RPC (for tests that speak raw HTTP to a socket).
INITIALIZE_REQUEST = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "flood", "version": "1"},
    },
}


@contextlib.asynccontextmanager
async def uds_client(path: Path) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(path))) as http,
        Client(streamable_http_client("http://localhost/mcp", http_client=http)) as client,
    ):
        yield client


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1, result
    block = result.content[0]
    assert isinstance(block, TextContent), result
    return block.text
