"""`hive-agent`: what runs inside an agent's container (never imports temporalio)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

# Standard library only: cheap to import for every command.
from agent_harness import sandbox_run
from agent_harness.version import hive_agent_version


class PrintVersion(argparse.Action):
    """argparse's `version` action, but looking the version up only when `--version` is given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        print(f"hive-agent {hive_agent_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hive-agent", description="hyperhive's in-container harness."
    )
    parser.add_argument("--version", action=PrintVersion)
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
    run = commands.add_parser(
        "run",
        usage="hive-agent run [--model-socket PATH] [--port N] -- COMMAND [ARG ...]",
        help="run a command in a sandbox, with the model API forwarded from a loopback port",
        description="Listen on 127.0.0.1:PORT, forward each connection to the model proxy's unix "
        "socket, run COMMAND with stdin/stdout/stderr passed through and exit with its code. "
        "Used inside network-less sandboxes (bwrap), with ANTHROPIC_BASE_URL pointing at PORT.",
    )
    run.add_argument(
        "--model-socket",
        metavar="PATH",
        default=sandbox_run.DEFAULT_MODEL_SOCKET,
        help="hive-c0re's model proxy for this agent (default: %(default)s)",
    )
    run.add_argument(
        "--port",
        type=int,
        default=sandbox_run.DEFAULT_PORT,
        help="loopback port to listen on (default: %(default)s)",
    )
    run.add_argument("argv", nargs="+", metavar="COMMAND", help="the command and its arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "mcp":
        # Imported here: the MCP SDK is only needed by this command.
        from agent_harness import mcp_bridge

        return mcp_bridge.run(args.socket)
    if args.command == "run":
        return sandbox_run.run(args.model_socket, args.port, args.argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
