"""`hive-agent`: what runs inside an agent's container (never imports temporalio)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hyperhive import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hive-agent", description="hyperhive's in-container harness."
    )
    parser.add_argument("--version", action="version", version=f"hive-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    mcp = commands.add_parser(
        "mcp",
        help="stdio MCP server for claude, forwarding to hive-c0re's MCP socket",
        description="Serve MCP on stdin/stdout (what claude's --mcp-config starts) and forward "
        "tools/list and tools/call to hive-c0re's MCP server on this agent's unix socket.",
    )
    mcp.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help="the agent's MCP socket (default: $HIVE_MCP_SOCKET, else /run/hive/mcp.sock)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "mcp":
        # Imported here: the MCP SDK is only needed by this command.
        from agent_harness import mcp_bridge

        return mcp_bridge.run(args.socket)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
